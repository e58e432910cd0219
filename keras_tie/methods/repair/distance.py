"""The distances between an image and its repair: L2 and an LPIPS-style perceptual distance.

Both return one value per image, `[B]`, 0 for identical images:

    l2(x, y)          = (1 / D) sum_p (x_p - y_p)^2          D = H * W * C

    perceptual(x, y)  = sum_l layer(phi_l(x), phi_l(y))
    layer(a, b)       = (1 / (H_l W_l)) sum_{h,w} || a_hw / (||a_hw|| + eps)
                                                  - b_hw / (||b_hw|| + eps) ||^2

where phi_l(x)_hw is the C_l-channel activation of layer l at position (h, w)
of a network trained on in-distribution images. This is LPIPS (Zhang et al.,
2018, eq. 1) with every learned per-channel weight w_l set to 1: the linear
heads LPIPS calibrates on human judgements come with its pretrained
VGG/AlexNet, which cannot be downloaded here, and a keras-tie classifier's
channels have no such calibration. Unit-normalising over channels makes each
position's term lie in [0, 4], so layers of different widths and scales weigh
alike; a position where both activations are all zero contributes 0.

L2 is a mean, not the paper's sum ||x - y||^2 (eq. 2): pixel2style2pixel's
loss, which SR-OOD reuses (section IV-A), is a mean squared error, and the
mean keeps lambda_1 comparable across image sizes. Orderings, and so AUROC,
are the same.
"""

import tensorflow as tf

DISTANCES = ("perceptual", "l2")
# LPIPS's normalize_tensor: x / (sqrt(sum x^2) + 1e-10).
NORM_EPSILON = 1e-10


def l2_distance(x, y):
    """Mean squared pixel difference per image, `[B]`."""
    return tf.reduce_mean(tf.square(tf.cast(x, tf.float32) - tf.cast(y, tf.float32)),
                          axis=tf.range(1, tf.rank(x)))


def unit_normalize(activations):
    """Each position's channel vector divided by its L2 norm (plus `NORM_EPSILON`)."""
    norm = tf.sqrt(tf.reduce_sum(tf.square(activations), axis=-1, keepdims=True))
    return activations / (norm + NORM_EPSILON)


def layer_distance(a, b):
    """LPIPS's term of one layer: squared difference of unit-normalised channel vectors,
    summed over channels and averaged over positions, `[B]`.

    `a`, `b`: activations `[B, ..., C]` (feature maps `[B, H, W, C]` or vectors `[B, C]`).
    """
    squared = tf.reduce_sum(tf.square(unit_normalize(a) - unit_normalize(b)), axis=-1)
    if squared.shape.rank == 1:
        return squared
    return tf.reduce_mean(squared, axis=tf.range(1, tf.rank(squared)))


def perceptual_distance(features_x, features_y):
    """Sum over layers of `layer_distance`, `[B]`; `features_*` are lists of activations."""
    return tf.add_n([layer_distance(a, b) for a, b in zip(features_x, features_y, strict=True)])
