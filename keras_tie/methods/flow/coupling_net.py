"""CouplingNet: the shift and log-scale network of a RealNVP affine coupling."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_tie")
class CouplingNet(keras.layers.Layer):
    """A small ResNet returning the (shift, log-scale) of an affine coupling.

    in_conv (3x3, `width`) -> `blocks` residual blocks h + conv(relu(conv(relu(h))))
    -> relu -> out_conv (3x3, 2 * `out_channels`) -> (shift, raw), and
    log_scale = scale * tanh(raw) with a learned per-channel `scale`
    (Dinh et al., 2017, section 4.1), which bounds the log-scale while the
    network learns.

    Unlike Dinh et al. there is no batch normalisation: it would couple the
    samples of a batch, and the approximate-mass penalty needs each image's
    gradient of its own log-likelihood. Instead the second convolution of each
    residual block and the output convolution start at zero, so every block
    and every coupling starts as the identity and deep stacks train without
    normalisation (the "zero-init residual" of Goyal et al., 2017).

    Args:
        out_channels: channels of the shift and of the log-scale.
        width: channels of the hidden convolutions.
        blocks: residual blocks.

    Example:

    ```python
    net = CouplingNet(out_channels=1, width=32, blocks=2)
    shift, log_scale = net(keras.random.normal((8, 28, 28, 2)))
    ```
    """

    def __init__(self, out_channels, width=64, blocks=4, **kwargs):
        super().__init__(**kwargs)
        for key, value in (("out_channels", out_channels), ("width", width),
                           ("blocks", blocks)):
            if int(value) < 1:
                raise ValueError(f"{key} must be >= 1. Received: {key}={value}")
        self.out_channels = int(out_channels)
        self.width = int(width)
        self.blocks = int(blocks)
        conv = dict(kernel_size=3, padding="same")
        self.in_conv = keras.layers.Conv2D(self.width, name="in_conv", **conv)
        self.block_in = [keras.layers.Conv2D(self.width, name=f"block{i}_in", **conv)
                         for i in range(self.blocks)]
        self.block_out = [keras.layers.Conv2D(self.width, kernel_initializer="zeros",
                                              name=f"block{i}_out", **conv)
                          for i in range(self.blocks)]
        self.out_conv = keras.layers.Conv2D(2 * self.out_channels, kernel_initializer="zeros",
                                            name="out_conv", **conv)

    def build(self, input_shape):
        hidden = (*input_shape[:-1], self.width)
        self.in_conv.build(input_shape)
        for first, second in zip(self.block_in, self.block_out):
            first.build(hidden)
            second.build(hidden)
        self.out_conv.build(hidden)
        self.scale = self.add_weight(shape=(self.out_channels,), initializer="ones",
                                     name="log_scale_factor")

    def call(self, inputs):
        h = self.in_conv(inputs)
        for first, second in zip(self.block_in, self.block_out):
            h = h + second(ops.relu(first(ops.relu(h))))
        shift, raw = ops.split(self.out_conv(ops.relu(h)), 2, axis=-1)
        return shift, self.scale * ops.tanh(raw)

    def compute_output_spec(self, inputs):
        shape = (*inputs.shape[:-1], self.out_channels)
        return (keras.KerasTensor(shape, inputs.dtype), keras.KerasTensor(shape, inputs.dtype))

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels, "width": self.width,
                "blocks": self.blocks}
