"""SR-OOD's erosion operators as vectorised TensorFlow ops (paper, sections IV-B and IV-D).

    down{F}:  T(x) = clip(up(clip(down(x, F))))   bicubic both ways, [0, 1]
    box...:   T(x) = x * M                        M = 0 in the rectangle, 1 elsewhere
    identity: T(x) = x

The downsampling is antialiased (`tf.image.resize(..., antialias=True)`: the
bicubic kernel widened by F, as MATLAB's `imresize`, the usual
super-resolution degradation) so that it removes detail instead of aliasing
it; the upsampling is plain bicubic. Bicubic interpolation overshoots, so
both results are clipped to [0, 1]. A size that F does not divide is rounded
to the nearest pixel.

`ErosionSet` holds the set T = {T_1, ..., T_m} of one repair model. Training
draws one operator per image (paper, Algorithm 1: u ~ U(1, |T|) for each
x_i) and applies the whole batch in one pass: every distinct downsampling
factor is computed once for the batch and each image picks its own, then
each image is multiplied by its own mask. Test time applies one fixed
operator T*.
"""

import numpy as np
import tensorflow as tf

from keras_tie.methods.repair.operators import parse_operator


def downsample_upsample(x, factor):
    """Bicubic downsampling of a batch `[B, H, W, C]` by `factor`, then back to H x W."""
    rows, columns = int(x.shape[1]), int(x.shape[2])
    small = [max(int(round(rows / factor)), 1), max(int(round(columns / factor)), 1)]
    x = tf.clip_by_value(tf.image.resize(x, small, method="bicubic", antialias=True), 0.0, 1.0)
    return tf.clip_by_value(tf.image.resize(x, [rows, columns], method="bicubic"), 0.0, 1.0)


def box_mask(image_shape, top, left, height, width):
    """A float32 `[H, W, 1]` mask: 0 in the rectangle, 1 elsewhere."""
    mask = np.ones((int(image_shape[0]), int(image_shape[1]), 1), np.float32)
    mask[top: top + height, left: left + width] = 0.0
    return mask


class ErosionSet:
    """The erosion operators of one repair model, applied to batches.

    Args:
        operators: operator names (see `keras_tie.methods.repair.operators`), in order.
        image_shape: (H, W, C) of the images.

    Example:

    ```python
    erosions = ErosionSet(["down2", "down4"], (32, 32, 3))
    eroded = erosions.apply(x, 1)                          # every image: down4
    eroded = erosions.apply(x, erosions.sample(rng, 64))   # one operator per image
    ```
    """

    def __init__(self, operators, image_shape):
        if isinstance(operators, str) or not operators:
            raise ValueError(f"operators is a non-empty list of operator names. "
                             f"Received: operators={operators!r}")
        self.image_shape = tuple(int(d) for d in image_shape)
        self.specs = [parse_operator(name) for name in operators]
        self.names = [spec.name for spec in self.specs]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"An operator is listed twice. Received: operators={self.names}")
        masks = [box_mask(self.image_shape, *spec.box_rows_columns(self.image_shape))
                 if spec.box else np.ones((*self.image_shape[:2], 1), np.float32)
                 for spec in self.specs]
        self._has_box = [spec.box is not None for spec in self.specs]
        # numpy, not tensors: a set built inside one tf.function trace is reused in others.
        self.masks = np.stack(masks)                                   # [m, H, W, 1]
        self.factors = sorted({spec.factor for spec in self.specs})    # distinct, 1 first
        self._factor_slot = np.array([self.factors.index(spec.factor) for spec in self.specs],
                                     np.int32)

    def __len__(self):
        return len(self.specs)

    def index(self, name):
        """The position of operator `name` in the set."""
        if name not in self.names:
            raise ValueError(f"Operator {name!r} is not in this set. Received: name={name!r}. "
                             f"The set: {', '.join(self.names)}")
        return self.names.index(name)

    def sample(self, rng, batch_size):
        """One uniformly drawn operator index per image, `[batch_size]` int32.

        `rng` is a `tf.random.Generator`, or a stateless seed (int tensor of
        shape [2]): the same seed draws the same operators.
        """
        if isinstance(rng, tf.random.Generator):
            return rng.uniform([batch_size], 0, len(self.specs), dtype=tf.int32)
        return tf.random.stateless_uniform([batch_size], rng, 0, len(self.specs), dtype=tf.int32)

    def apply(self, x, index):
        """Erodes a batch `[B, H, W, C]` of pixels in [0, 1].

        Args:
            x: the images.
            index: a Python int (one operator for the whole batch) or an int
                tensor `[B]` (one operator per image).
        """
        x = tf.convert_to_tensor(x, tf.float32)
        if isinstance(index, (int, np.integer)):
            spec = self.specs[int(index)]
            if spec.factor > 1:
                x = downsample_upsample(x, spec.factor)
            return x * self.masks[int(index)] if spec.box else x
        index = tf.convert_to_tensor(index, tf.int32)
        if len(self.factors) > 1:
            resized = tf.stack([x if f == 1 else downsample_upsample(x, f) for f in self.factors],
                               axis=1)                                  # [B, F, H, W, C]
            x = tf.gather(resized, tf.gather(self._factor_slot, index), batch_dims=1)
        elif self.factors[0] > 1:
            x = downsample_upsample(x, self.factors[0])
        if any(self._has_box):
            x = x * tf.gather(self.masks, index)
        return x
