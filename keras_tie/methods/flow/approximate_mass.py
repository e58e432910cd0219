"""The approximate mass of a flow, its log-likelihood in nats and bits, and dequantisation.

The approximate mass (Grathwohl et al., 2020; Chali et al., CVPRW 2023,
004_f7d5548531a0fef9.txt, section 2) of an input x is the Euclidean norm of
the gradient of the log-density with respect to the input:

    mass(x) = || d log p(x) / dx ||_2

It is the OOD score of the approximate-mass paper (higher = more OOD) and,
averaged over a batch, the penalty of its training objective (equation 2):

    loss = mean_i [ -log p(x_i) ] + alpha * mean_i mass(x_i)

`log_prob_and_mass` is the one place this is computed: `FlowModel` trains
with it, the `approximate_mass` detector and the per-epoch trace score with
it. The gradient is taken of the *sum* of the batch's log-densities: the
images of a batch are independent (the flow has no batch-coupling layer), so
row i of that gradient is the gradient of log p(x_i) alone.

Units. x is the flow's input, pixels in [0, 1] (dequantised as below), so the
mass is per unit of [0, 1] intensity. Log-densities are in nats per image;
the negative log-likelihood of the 8-bit image is `-log p(x) + D log 256`
(the density of the bin's 256^-D volume), and bits per dimension divide that
by D log 2.
"""

import math
import weakref

import numpy as np
import tensorflow as tf

PIXEL_LEVELS = 256  # 8-bit images
# Images per traced scoring call: the mass needs a backward pass, so a batch of
# 32x32x3 images through a 60 M parameter flow holds its activations twice.
SCORE_BATCH_SIZE = 128


def dequantize(x, rng=None, noise=None):
    """Uniform dequantisation (Dinh et al., 2017; Theis et al., 2016): (255 x + u) / 256.

    Args:
        x: float pixels k / 255 in [0, 1], `[B, H, W, C]`.
        rng: a `tf.random.Generator`; u ~ U[0, 1) per pixel.
        noise: u itself (shape of x), instead of `rng`.

    Returns:
        Points of [0, 1): each pixel uniform in its 1/256-wide bin.
    """
    u = noise if noise is not None else rng.uniform(tf.shape(x), dtype=x.dtype)
    return (x * (PIXEL_LEVELS - 1) + u) / PIXEL_LEVELS


def bin_midpoint(x):
    """(255 x + 1/2) / 256: the centre of each pixel's dequantisation bin.

    The deterministic counterpart of `dequantize`, used when scoring: the
    expected dequantised image, inside the support the flow was trained on.
    Pixels outside [0, 1] (unclipped Gaussian noise, say) are clipped first:
    the flow's density lives on [0, 1]^D, and no 8-bit image holds them.
    """
    x = tf.clip_by_value(x, 0.0, 1.0)
    return (x * (PIXEL_LEVELS - 1) + 0.5) / PIXEL_LEVELS


def log_prob_and_mass(flow, x, training=False):
    """log p(x) and the approximate mass ||d log p(x) / dx|| of each image of a batch.

    Differentiable with respect to the flow's weights when called under an
    outer `tf.GradientTape` (double backpropagation: the penalty's gradient).

    Args:
        flow: a callable `x -> log p(x)` of shape `[B]` (a `RealNVP`).
        x: float32 `[B, H, W, C]`, pixels in [0, 1].
        training: passed to the flow.

    Returns:
        (log_prob `[B]` in nats, mass `[B]`).
    """
    x = tf.convert_to_tensor(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        log_prob = flow(x, training=training)
        # Samples are independent: row i of d(sum_j log p(x_j))/dx is d log p(x_i)/dx_i.
        total = tf.reduce_sum(log_prob)
    return log_prob, gradient_norm(tape.gradient(total, x))


def gradient_norm(gradient):
    """Per-image L2 norm of a `[B, ...]` gradient."""
    flat = tf.reshape(gradient, [tf.shape(gradient)[0], -1])
    return tf.sqrt(tf.reduce_sum(tf.square(flat), axis=-1))


def nll_nats(log_prob, dimensions):
    """Negative log-likelihood of the 8-bit image in nats: -log p(x) + D log 256."""
    return -log_prob + dimensions * math.log(PIXEL_LEVELS)


def bits_per_dim(nll, dimensions):
    """Nats per image to bits per dimension."""
    return nll / (dimensions * math.log(2.0))


_SCORERS = weakref.WeakKeyDictionary()


def score_function(flow, with_mass=True):
    """A traced function of a flow scoring images at the bins' midpoints, one per flow.

    It maps float32 pixels in [0, 1], `[B, H, W, C]`, to {"nll": `[B]`} (nats
    per image, of the 8-bit image) and, `with_mass`, "approximate_mass": `[B]`
    too; without it no gradient is taken (a forward pass only).
    """
    per_flow = _SCORERS.setdefault(flow, {})
    if with_mass not in per_flow:
        dimensions = math.prod(flow.image_shape)

        def scores(x):
            x = bin_midpoint(x)
            if not with_mass:
                return {"nll": nll_nats(flow(x), dimensions)}
            log_prob, mass = log_prob_and_mass(flow, x)
            return {"approximate_mass": mass, "nll": nll_nats(log_prob, dimensions)}

        per_flow[with_mass] = tf.function(
            scores, input_signature=[tf.TensorSpec([None, *flow.image_shape], tf.float32)])
    return per_flow[with_mass]


def flow_scores(flow, images, batch_size=SCORE_BATCH_SIZE):
    """(mass, nll) numpy float64 arrays `[N]` of uint8 or [0, 1] float `images`."""
    from keras_tie.detectors.detector import pixel_batches

    function = score_function(flow)
    masses, nlls = [], []
    for x in pixel_batches(images, batch_size):
        scores = function(tf.constant(x))
        masses.append(scores["approximate_mass"].numpy())
        nlls.append(scores["nll"].numpy())
    if not masses:
        return np.zeros(0), np.zeros(0)
    return (np.concatenate(masses).astype(np.float64),
            np.concatenate(nlls).astype(np.float64))
