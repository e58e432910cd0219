"""RealNVP: the multi-scale RealNVP density model of images (Dinh et al., 2017)."""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from keras_tie.methods.flow.coupling_net import CouplingNet
from keras_tie.methods.flow.bijectors import (
    ChannelCoupling,
    CheckerboardCoupling,
    FactorOut,
    LogitTransform,
    Squeeze,
)

tfb = tfp.bijectors
tfd = tfp.distributions

LOGIT_BOUNDARY = 0.05  # a of logit(a + (1 - 2a) x), Dinh et al. (2017), section 4.1


@keras.saving.register_keras_serializable(package="keras_tie")
class RealNVP(keras.Model):
    """Multi-scale RealNVP over images with pixels in (0, 1); `call(x)` is log p(x) in nats.

    The flow is a `tfd.TransformedDistribution` of a standard normal over
    `image_shape` through a `tfb.Chain` of the bijectors of
    `flow_bijectors.py`, built on each call from the Keras layers this model
    owns (the coupling networks), so fit, save and checkpoints work as for any
    Keras model. From the image side:

    1. `LogitTransform`: y = logit(a + (1 - 2a) x), a = 0.05;
    2. each scale but the last (Dinh et al., section 3.6): three checkerboard
       couplings (parities 0, 1, 0), a squeeze `[H, W, C] -> [H/2, W/2, 4C]`,
       three channel-wise couplings (the second half changes, then the first,
       then the second), then the first 2C channels go on to the next scale
       while the other 2C are factored out: they are latent variables, under
       the standard normal directly; the scale ends with the inverse squeeze,
       so each scale keeps the shape of its input and the latent has the
       image's shape;
    3. the last scale: four checkerboard couplings (parities 0, 1, 0, 1).

    Each coupling has its own `CouplingNet`: `blocks` residual blocks of
    `width * 2**scale` channels at checkerboard couplings, twice that at the
    channel-wise ones (the doubling of Dinh et al.'s code and of Chute's
    PyTorch RealNVP). With 4 blocks, 2 scales and width 64 on 28x28x1 images the model
    has about 10 million parameters, the approximate-mass paper's grayscale
    model (004_f7d5548531a0fef9.txt, section 4.2: 4 blocks, 2 scales,
    ~10 M); 6 blocks, 3 scales on 32x32x3 give about 60 M, its colour model.

    x is a continuous point of [0, 1]^D: a dequantised image (`(255 x + u) /
    256`, see `keras_tie.methods.flow.approximate_mass.dequantize`) when training, the
    centre of the quantisation bin when scoring. `log p(x)` is the density of
    that point; the negative log-likelihood of the 8-bit image, in nats, is
    `-log p(x) + D log 256` (`approximate_mass.nll_nats`).

    Args:
        image_shape: `(H, W, C)`; H and W divisible by 2**(scales - 1).
        scales: scales of the multi-scale architecture (paper: 2 for 28x28
            grayscale, 3 for 32x32 colour).
        blocks: residual blocks per coupling network (paper: 4 and 6).
        width: channels of the coupling networks of the first scale.
        boundary: a of the logit transform.

    Example:

    ```python
    flow = RealNVP((28, 28, 1), scales=2, blocks=4, width=64)
    log_prob = flow(images)            # [batch], nats; images in (0, 1)
    samples = flow.sample(16, seed=0)  # [16, 28, 28, 1]
    ```

    Reference:
        Dinh, Sohl-Dickstein, Bengio. Density estimation using Real NVP. ICLR 2017.
    """

    def __init__(self, image_shape, scales=2, blocks=4, width=64, boundary=LOGIT_BOUNDARY,
                 **kwargs):
        super().__init__(**kwargs)
        image_shape = tuple(int(d) for d in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (H, W, C). Received: image_shape={image_shape}")
        if int(scales) < 1 or int(blocks) < 1 or int(width) < 1:
            raise ValueError("scales, blocks and width must be >= 1. Received: "
                             f"scales={scales}, blocks={blocks}, width={width}")
        factor = 2 ** (int(scales) - 1)
        if image_shape[0] % factor or image_shape[1] % factor:
            raise ValueError(
                f"{scales} scales squeeze the image {int(scales) - 1} times, so its height and "
                f"width must be multiples of {factor}. Received: image_shape={image_shape}, "
                f"scales={scales}")
        self.image_shape = image_shape
        self.scales = int(scales)
        self.blocks = int(blocks)
        self.width = int(width)
        self.boundary = float(boundary)
        LogitTransform(self.boundary)  # refuses a boundary outside (0, 1/2) now
        self.coupling_nets = []
        self._chain(self._new_net)  # creates the networks in chain order
        self.built = True

    def _new_net(self, in_channels, out_channels, width):
        net = CouplingNet(out_channels, width, self.blocks,
                          name=f"coupling_{len(self.coupling_nets)}")
        net.build((None, None, None, in_channels))
        self.coupling_nets.append(net)
        return net

    def _chain(self, net_for):
        """The bijector chain; `net_for(in_channels, out_channels, width)` gives each
        coupling's network, in chain order (the one walk both construction and
        `bijector()` follow)."""

        def scale(index, shape):
            h, w, c = shape
            width = self.width * 2 ** index
            last = index == self.scales - 1
            parts = [CheckerboardCoupling(net_for(c + 1, c, width), parity=i % 2)
                     for i in range(4 if last else 3)]
            if last:
                return tfb.Chain(parts)
            parts.append(tfb.Invert(Squeeze()))
            parts += [ChannelCoupling(net_for(2 * c, 2 * c, 2 * width), reverse=i % 2 == 1)
                      for i in range(3)]
            parts.append(FactorOut(scale(index + 1, (h // 2, w // 2, 2 * c)), keep=2 * c))
            parts.append(Squeeze())
            return tfb.Chain(parts)

        return tfb.Chain([LogitTransform(self.boundary), scale(0, self.image_shape)])

    def bijector(self):
        """The flow as a `tfb.Chain`: forward latent -> image, inverse image -> latent."""
        nets = iter(self.coupling_nets)
        return self._chain(lambda *spec: next(nets))

    def distribution(self):
        """The `tfd.TransformedDistribution` over images of shape `image_shape`."""
        base = tfd.Sample(tfd.Normal(tf.constant(0.0), tf.constant(1.0)),
                          sample_shape=self.image_shape)
        return tfd.TransformedDistribution(base, self.bijector())

    def call(self, inputs):
        return self.distribution().log_prob(tf.convert_to_tensor(inputs, tf.float32))

    def sample(self, count, seed=None):
        """`count` images drawn from the flow (pixels in (0, 1))."""
        return self.distribution().sample(count, seed=seed)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape[:1], "float32")

    def get_config(self):
        return {**super().get_config(), "image_shape": list(self.image_shape),
                "scales": self.scales, "blocks": self.blocks, "width": self.width,
                "boundary": self.boundary}
