"""The conditional generator G(z, y~) that inverts a classifier.

Architecture (the paper, 001_b369f55403bc771c.txt section 6.1, only says
"4-6 transposed convolutional stages" with normally initialised weights, so
this is our choice): [z, y~] -> Dense to an (H/2^u) x (W/2^u) x width map ->
u stride-2 transposed convolutions halving the channels each time -> one
stride-1 transposed convolution -> a stride-1 transposed convolution to C
channels with a sigmoid, i.e. pixels in [0, 1] like the data. With
`upsampling="resize"` each stride-2 transposed convolution is replaced by a
bilinear 2x upsampling and a 3x3 convolution (Odena et al., "Deconvolution and
checkerboard artifacts", Distill 2016): the same output shapes and nearly the
same parameter count, without the checkerboard patterns that the uneven
overlap of a stride-2 kernel draws.

The condition enters as the centred log of y~ (`LogCondition`): log y~ -
mean(log y~) = v - mean(v), the logits that y~ was drawn from. y~ itself
varies by a few hundredths around 1/K while z has unit variance, so a Dense
layer fed [z, y~] needs thousands of steps before it responds to the class it
is asked for; fed [z, log y~] it does from the start. G remains a function of
(z, y~), as the paper has it. u = 2 up to
32x32 images (4 stages), 3 above (5 stages). Every hidden stage has
BatchNormalization and ReLU; kernels start from N(0, 0.02) as in DCGAN.
"""

import keras
import numpy as np
from keras import layers, ops

from keras_tie.config import GENERATOR_UPSAMPLINGS


@keras.saving.register_keras_serializable(package="keras_tie")
class LogCondition(layers.Layer):
    """Maps probability vectors y~ to their centred logs, log y~ - mean(log y~)."""

    def call(self, probabilities):
        logs = ops.log(ops.maximum(probabilities, 1e-12))
        return logs - ops.mean(logs, axis=-1, keepdims=True)


def build_generator(image_shape, num_conditions, latent_dim=64, width=128, bn_momentum=0.99,
                    name="generator", output_mean=None, upsampling="transpose"):
    """Builds G taking `[z, y_soft]` (shapes [B, latent_dim], [B, num_conditions]).

    `bn_momentum` is the BatchNormalization momentum (see `build_classifier`).
    `output_mean`: None (the default) starts the sigmoid's bias at 0, so the
    untrained G draws mid-gray images (0.5 plus small ripples); a sequence of
    C numbers in (0, 1), e.g. the training set's mean pixel per channel, starts
    the bias at their logits, so the untrained G draws images of the data's
    mean intensity (the usual "initialise the last bias to the data mean").

    Returns:
        A functional `keras.Model` returning images of `image_shape` in [0, 1].
    """
    if upsampling not in GENERATOR_UPSAMPLINGS:
        raise ValueError("upsampling must be 'transpose' or 'resize'. "
                         f"Received: upsampling={upsampling!r}")
    height, width_px, channels = (int(d) for d in image_shape)
    ups = 2 if max(height, width_px) <= 32 else 3
    factor = 2 ** ups
    if height % factor or width_px % factor:
        raise ValueError(
            f"The generator needs image sides divisible by {factor}. "
            f"Received: image_shape={tuple(image_shape)}"
        )
    init = keras.initializers.RandomNormal(stddev=0.02)
    z = keras.Input((latent_dim,), name="z")
    y_soft = keras.Input((num_conditions,), name="y_soft")
    x = layers.Concatenate(name="condition")([z, LogCondition(name="log_condition")(y_soft)])
    x = layers.Dense(height // factor * width_px // factor * width, use_bias=False,
                     kernel_initializer=init, name="project")(x)
    x = layers.BatchNormalization(momentum=bn_momentum, name="project_bn")(x)
    x = layers.ReLU(name="project_relu")(x)
    x = layers.Reshape((height // factor, width_px // factor, width), name="reshape")(x)
    filters = width
    for i in range(ups):
        filters = max(filters // 2, 16)
        if upsampling == "resize":
            x = layers.UpSampling2D(2, interpolation="bilinear", name=f"up{i + 1}_resize")(x)
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                              kernel_initializer=init, name=f"up{i + 1}")(x)
            x = _bn_relu(x, f"up{i + 1}", bn_momentum)
        else:
            x = _deconv_bn_relu(x, filters, 2, init, f"up{i + 1}", bn_momentum)
    x = _deconv_bn_relu(x, filters, 1, init, "refine", bn_momentum)
    bias_init = "zeros"
    if output_mean is not None:
        p = np.clip(np.asarray(output_mean, dtype=np.float64).reshape(-1), 1e-3, 1 - 1e-3)
        if p.size not in (1, channels):
            raise ValueError(f"output_mean needs 1 or {channels} values. Received: {p.size}")
        bias_init = keras.initializers.Constant(np.broadcast_to(np.log(p / (1 - p)), (channels,)))
    images = layers.Conv2DTranspose(channels, 3, padding="same", activation="sigmoid",
                                    kernel_initializer=init, bias_initializer=bias_init,
                                    name="pixels")(x)
    return keras.Model([z, y_soft], images, name=name)


def _deconv_bn_relu(x, filters, stride, init, name, bn_momentum):
    x = layers.Conv2DTranspose(filters, 4 if stride == 2 else 3, strides=stride, padding="same",
                               use_bias=False, kernel_initializer=init, name=name)(x)
    return _bn_relu(x, name, bn_momentum)


def _bn_relu(x, name, bn_momentum):
    x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)
