"""FlowModel: trains a RealNVP by maximum likelihood plus the approximate-mass penalty.

The training objective of the approximate-mass paper (Chali et al., CVPRW
2023, 004_f7d5548531a0fef9.txt, equation 2):

    loss = mean_i nll(x_i) + alpha * mean_i || d log p(x_i) / dx_i ||

on uniformly dequantised images x_i. alpha = 0 is the vanilla
maximum-likelihood flow. The paper found alpha = 2 best (section 4.1) with
L = "the average log-likelihood ... on a batch": the gradient of a batch
mean is each image's own gradient divided by the batch size B, so its
alpha = 2 weighs each image's mass 2 / B. Here the gradient is per image (the
penalty does not depend on the batch size), and the paper's setting is
alpha = 2 / 64 = 0.03125 at our batch of 64 (DEFAULT_ALPHA; docs/flow.md,
"Units", has the runs behind it).
"""

import math

import keras
import tensorflow as tf

from keras_tie.methods.flow.approximate_mass import (
    bits_per_dim,
    dequantize,
    gradient_norm,
    log_prob_and_mass,
    nll_nats,
)
from keras_tie.training import distribute

PAPER_ALPHA = 2.0  # 004_f7d5548531a0fef9.txt, section 4.1, on the gradient of the batch mean
PAPER_ALPHA_BATCH = 64  # the batch size at which our per-image alpha equals the paper's
DEFAULT_ALPHA = PAPER_ALPHA / PAPER_ALPHA_BATCH  # 0.03125 per image


class FlowModel(keras.Model):
    """Trains a flow with `fit()`: negative log-likelihood plus alpha times the approximate mass.

    `train_step`, on a batch of pixels in [0, 1] (labels, if any, ignored):

    1. dequantise: x = (255 x + u) / 256, u ~ U[0, 1);
    2. alpha > 0: under the outer tape, `log_prob_and_mass` runs the flow
       under an inner tape watching x; the mass (norm of each image's
       gradient of its own log p) enters the loss, and the outer tape
       differentiates through that gradient (double backpropagation);
       alpha = 0: one tape watches both x and the weights, and a single
       backward pass gives the weight gradients and, for the `mass` metric,
       the input gradient;
    3. one optimizer step.

    Metrics: `loss`, `nll` (nats per image, of the 8-bit image), `bits_per_dim`
    and `mass` (mean approximate mass of the batch). `test_step` reports the
    same on dequantised images.

    The training noise u is drawn from a stateless seed keyed by the optimizer
    step, for the global batch; under a tf.distribute strategy each replica
    takes its rows, and its loss is its share of the global-batch mean
    (keras_tie/training/distribute.py), so the summed gradients are those of
    one device. The mass is per image, so the nested tape needs no exchange
    between replicas.

    The flow is saved on its own (`RealNVP` is a registered Keras model), as
    TIE saves its classifier; this wrapper holds what only training needs.

    Args:
        flow: a `RealNVP` (or any Keras model `x -> log p(x)` with
            `image_shape`).
        alpha: weight of each image's approximate mass in the loss (default
            2 / 64, the paper's alpha = 2 on the gradient of the batch-mean
            log-likelihood at batch 64; 0 = vanilla).
        seed: seed of the dequantisation noise (stateless, keyed by the
            optimizer step, in training; an in-graph `tf.random.Generator`,
            checkpointed with the run, in `test_step`).

    Example:

    ```python
    model = FlowModel(RealNVP((28, 28, 1)), alpha=2.0 / 64)
    model.compile(keras.optimizers.Adam(1e-3))
    model.fit(images, epochs=1, batch_size=64)   # float pixels in [0, 1]
    ```

    Reference:
        Chali, Kucher, Duranton, Klein. Improving normalizing flows with the
        approximate mass for out-of-distribution detection. CVPRW 2023.
    """

    def __init__(self, flow, alpha=DEFAULT_ALPHA, seed=0, **kwargs):
        super().__init__(**kwargs)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0. Received: alpha={alpha}")
        self.flow = flow
        self.alpha = float(alpha)
        self.dimensions = math.prod(flow.image_shape)
        self.seed = int(seed)
        self.rng = tf.random.Generator.from_seed(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.nll_tracker = keras.metrics.Mean(name="nll")
        self.bpd_tracker = keras.metrics.Mean(name="bits_per_dim")
        self.mass_tracker = keras.metrics.Mean(name="mass")
        self.built = True  # the flow is built (see distribute.skip_symbolic_build)

    @property
    def metrics(self):
        return [self.loss_tracker, self.nll_tracker, self.bpd_tracker, self.mass_tracker]

    def call(self, inputs, training=False):
        return self.flow(inputs, training=training)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if not distribute.skip_symbolic_build(self):  # see distribute.skip_symbolic_build
            super()._maybe_symbolic_build(iterator, data_batch)

    def train_step(self, data):
        images = tf.convert_to_tensor(_images(data), tf.float32)
        x = dequantize(images, noise=self.training_noise(images))
        variables = self.flow.trainable_variables
        if self.alpha > 0:
            with tf.GradientTape() as tape:
                log_prob, mass = log_prob_and_mass(self.flow, x, training=True)
                nll = distribute.global_mean(nll_nats(log_prob, self.dimensions))
                penalty = distribute.global_mean(mass)
                loss = nll + self.alpha * penalty
            gradients = tape.gradient(loss, variables)
        else:
            with tf.GradientTape() as tape:
                tape.watch(x)
                log_prob = self.flow(x, training=True)
                total = tf.reduce_sum(log_prob)
            # d total / dx: each image's own input gradient; d total / dw: the
            # weight gradient of -B * loss, since nll = -log p + constant (B
            # the global batch: this replica's share of the gradient).
            input_gradient, *total_gradients = tape.gradient(total, [x, *variables])
            batch = distribute.global_count(tf.shape(x)[0])
            gradients = [-g / batch for g in total_gradients]
            mass = gradient_norm(input_gradient)
            nll = distribute.global_mean(nll_nats(log_prob, self.dimensions))
            loss = nll
        self.optimizer.apply_gradients(zip(gradients, variables))
        return self._update_metrics(loss, nll, mass)

    def training_noise(self, images):
        """u ~ U[0, 1) for this replica's `images`: its rows of the global batch's draw, seeded by
        (seed, optimizer step)."""
        rows = distribute.global_count(tf.shape(images)[0], tf.int32)
        shape = tf.concat([[rows], tf.shape(images)[1:]], axis=0)
        seed = distribute.step_seed(self.seed, self.optimizer.iterations, 0)
        return distribute.replica_rows(tf.random.stateless_uniform(shape, seed,
                                                                   dtype=images.dtype))

    def test_step(self, data):
        x = dequantize(_images(data), self.rng)
        log_prob, mass = log_prob_and_mass(self.flow, x)
        nll = distribute.global_mean(nll_nats(log_prob, self.dimensions))
        return self._update_metrics(nll + self.alpha * distribute.global_mean(mass), nll, mass)

    def _update_metrics(self, loss, nll, mass):
        """Trackers get global-batch values (`loss`, `nll` are this replica's shares)."""
        loss, nll = distribute.all_replicas_sum(loss), distribute.all_replicas_sum(nll)
        self.loss_tracker.update_state(loss)
        self.nll_tracker.update_state(nll)
        self.bpd_tracker.update_state(bits_per_dim(nll, self.dimensions))
        self.mass_tracker.update_state(mass)
        return distribute.step_logs(self.metrics)


def _images(data):
    """The images of a batch that may be `x`, `(x,)` or `(x, y[, w])`."""
    return data[0] if isinstance(data, (tuple, list)) else data
