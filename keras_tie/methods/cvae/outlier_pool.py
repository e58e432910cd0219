"""OutlierPool: the extra class of the `cvae` method, regenerated as a whole every epoch.

Like `GarbagePool` (pool.py) it lives in a tf.Variable that `train_step`
samples in-graph, but it stores float32 pixels: Type I outliers are x + beta v
with |v_i| of order 1/sqrt(D) (about 0.004 to 0.04 per pixel for 28x28
images), below or near one 8-bit step, and they may leave [0, 1]; rounding to
uint8 would erase or clip most of the perturbation.
"""

import numpy as np
import tensorflow as tf

from keras_tie.methods.tie.pool import draw_indices


class OutlierPool:
    """A fixed-capacity float32 store of outlier images, replaced wholesale by `set`.

    Args:
        image_shape: (H, W, C).
        capacity: the most images the pool holds.
    """

    def __init__(self, image_shape, capacity):
        self.image_shape = tuple(int(d) for d in image_shape)
        self.capacity = int(capacity)
        self.images = tf.Variable(tf.zeros((self.capacity, *self.image_shape), tf.float32),
                                  trainable=False, name="outlier_pool")
        self.size = tf.Variable(0, dtype=tf.int32, trainable=False, name="outlier_pool_size")

    def __len__(self):
        return int(self.size.numpy())

    def set(self, images):
        """Replaces the content with `images` (float pixels; uint8 are divided by 255)."""
        images = np.asarray(images)
        images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 \
            else images.astype(np.float32, copy=False)
        if len(images) > self.capacity:
            raise ValueError(f"{len(images)} images do not fit a pool of capacity "
                             f"{self.capacity}.")
        content = np.zeros((self.capacity, *self.image_shape), np.float32)
        content[: len(images)] = images
        # One whole-variable assign per epoch (also what a mirrored variable accepts).
        self.images.assign(content)
        self.size.assign(len(images))

    def sample(self, count, rng):
        """Draws `count` images uniformly with replacement, as float32 (graph-safe).

        Args:
            count: number of images.
            rng: a `tf.random.Generator`, or a stateless seed (int tensor of
                shape [2]), as `GarbagePool.sample` takes.
        """
        index = draw_indices(count, self.size, rng)
        return tf.gather(self.images, index)

    def numpy(self):
        """The stored images, float32 [size, H, W, C]."""
        return self.images[: len(self)].numpy()
