"""The repair network of SR-OOD: a small convolutional U-Net.

The paper repairs with pixel2style2pixel on a pretrained StyleGAN (section
IV-D), which cannot be had here; it notes that "any encoder-decoder-based
model could be suitable" (section VII). This one, for H x W x C pixels in
[0, 1]:

- encoder: `depth` levels of two 3x3 conv + ReLU (width, 2 width, ...
  channels), each followed by 2x2 max-pooling;
- bottleneck: two 3x3 conv + ReLU (width * 2^depth channels);
- decoder: per level, bilinear 2x upsampling, a 3x3 conv + ReLU, the
  encoder's feature map of that level concatenated (`skips=True`), two 3x3
  conv + ReLU;
- output: a 1x1 conv to C channels and a sigmoid, so repairs are pixels in
  [0, 1].

No normalisation layers: a repair is then a fixed function of its input, the
same at training and test time and for ID and OOD batches alike. With
`skips=False` it is a plain encoder-decoder whose only path runs through the
bottleneck, closer to pSp's encoder-to-latent-to-generator.
"""

import keras
from keras import layers


def build_repair_unet(image_shape, width=32, depth=2, skips=True, name="repair_unet"):
    """Builds the repair network: eroded pixels in [0, 1] -> repaired pixels in [0, 1].

    Args:
        image_shape: (H, W, C); H and W must be divisible by 2^depth.
        width: channels of the first level (doubled at each level below).
        depth: number of 2x downsamplings.
        skips: concatenate each encoder level into the decoder (a U-Net);
            False gives a plain encoder-decoder.
        name: the model's name.

    Returns:
        A functional `keras.Model`.
    """
    image_shape = tuple(int(d) for d in image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"image_shape must be (H, W, C). Received: image_shape={image_shape}")
    if width < 1 or depth < 1:
        raise ValueError(f"width and depth must be >= 1. Received: width={width}, depth={depth}")
    step = 2 ** depth
    if image_shape[0] % step or image_shape[1] % step:
        raise ValueError(
            f"A repair network of depth {depth} halves the image {depth} times, so its height "
            f"and width must be divisible by {step}. Received: image_shape={image_shape}, "
            f"depth={depth}. Lower repair.depth.")
    inputs = keras.Input(image_shape, name="eroded")
    x = inputs
    encoded = []
    for level in range(depth):
        x = _conv_block(x, width * 2 ** level, f"enc{level + 1}")
        encoded.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level + 1}_pool")(x)
    x = _conv_block(x, width * 2 ** depth, "bottleneck")
    for level in reversed(range(depth)):
        filters = width * 2 ** level
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"dec{level + 1}_up")(x)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                          name=f"dec{level + 1}_upconv")(x)
        if skips:
            x = layers.Concatenate(name=f"dec{level + 1}_skip")([x, encoded[level]])
        x = _conv_block(x, filters, f"dec{level + 1}")
    outputs = layers.Conv2D(image_shape[-1], 1, activation="sigmoid", name="repaired")(x)
    return keras.Model(inputs, outputs, name=name)


def _conv_block(x, filters, name):
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_conv{i}")(x)
    return x
