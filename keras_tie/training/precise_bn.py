"""Precise BatchNormalization statistics: recomputed with the final weights after training.

A BatchNormalization layer normalises with the batch's statistics in training
and with moving averages (momentum 0.99) at inference. The averages mix
statistics of weights from the last ~100 steps. Usually harmless, this breaks
a classifier whose decision rests on a tiny input difference: the `cvae`
method's Type I outliers differ from their training images by a step of L2
norm 0.1 to 1 (per pixel 0.004 to 0.04), and with the moving averages its MNIST
classifier sent 78.4% of the ID test images to the OOD class (test accuracy
21.6%) while the same weights in training mode, on a batch mixed as in
training, separated ID and outliers perfectly. Recomputing each layer's
mean and variance as population statistics of the training mixture, with
the final weights (Wu and Johnson, "Rethinking 'Batch' in BatchNorm", 2021:
"precise BN"), gave 99.29% test accuracy and 0.03% of ID images to the OOD
class (docs/cvae.md).
"""

import keras
import numpy as np
import tensorflow as tf


def recalibrate_batch_norm(model, batches):
    """Sets every BatchNormalization layer's moving mean and variance of the functional
    `model` to the population statistics of its input over `batches`.

    Layers are recalibrated in order, each with the earlier ones already
    recalibrated and in inference mode, so each sees the inputs it will see
    at inference.

    Args:
        model: a functional `keras.Model`.
        batches: a list of float32 input batches (the training mixture).

    Returns:
        The names of the recalibrated layers.
    """
    names = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        probe = tf.function(keras.Model(model.input, layer.input), reduce_retracing=True)
        count, total, squares = 0, 0.0, 0.0
        for x in batches:
            h = probe(tf.constant(x), training=False)
            h = tf.reshape(tf.cast(h, tf.float64), [-1, h.shape[-1]])
            count += int(h.shape[0])
            total += tf.reduce_sum(h, axis=0).numpy()
            squares += tf.reduce_sum(tf.square(h), axis=0).numpy()
        mean = total / count
        variance = np.maximum(squares / count - np.square(mean), 0.0)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))
        names.append(layer.name)
    return names
