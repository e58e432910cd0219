"""The garbage pool: the images that make up the extra (n+1-th) class.

The pool lives in a fixed-capacity tf.Variable so that `train_step` draws its
garbage samples in-graph, without rebuilding the input pipeline when the pool
changes. Images are stored as 8-bit pixels, like the real data (a 60,000-image
pool of 28x28 images is 47 MB rather than 188 MB in float32), packed four to an
int32 word: MultiWorkerMirroredStrategy broadcasts every variable's initial
value with collectives that take int32 but not uint8. A pool created with
`dtype="float16"` stores float16 pixels instead, two to a word, and keeps
values outside [0, 1] (unclipped initial noise, `tie.initial_noise`).

It starts as Gaussian noise in the classifier's standardised input space
(pixel = mean + std * N(0, 1) per channel), the paper's D_garbage ~ N(0, I)
expressed in pixels: clipped to [0, 1] in a uint8 pool, as it is (unclipped)
in a float16 one. New inverted samples are appended
until the pool is full; after that the retirement rule decides:

- `random`: each new sample replaces a uniformly chosen old one, so older
  epochs' samples and the initial noise fade out geometrically (an image
  survives an epoch that adds m images to a full pool of capacity C with
  probability 1 - m / C): the pool leans to the latest epochs.
- `reservoir` (Vitter's Algorithm R): the k-th image ever offered (the
  initial noise counts) is kept with probability C / k, in a uniformly chosen
  slot. The pool is then a uniform sample of everything generated so far, the
  initial noise and every epoch weighted by how much each contributed: the
  pool the paper iterates (it keeps every sample), at a bounded size.
"""

import numpy as np
import tensorflow as tf

from keras_tie.config import RETIREMENT


class GarbagePool:
    """A fixed-capacity store of garbage images.

    Args:
        image_shape: (H, W, C).
        capacity: the most images the pool holds.
        retirement: `random` or `reservoir` (see the module docstring).
        dtype: how pixels are stored: `uint8` (default; [0, 1] in steps of
            1/255) or `float16` (any value, twice the memory).
    """

    def __init__(self, image_shape, capacity, retirement="random", dtype="uint8"):
        if retirement not in RETIREMENT:
            raise ValueError(f"Unknown pool retirement rule. Received: retirement={retirement!r};"
                             f" expected one of {RETIREMENT}.")
        if str(dtype) not in ("uint8", "float16"):
            raise ValueError(f"Unknown pool pixel type. Received: dtype={dtype!r}; expected "
                             "'uint8' or 'float16'.")
        self.dtype = np.dtype(str(dtype))
        self._per_word = 4 // self.dtype.itemsize  # pixels packed into one int32 word
        self.image_shape = tuple(int(d) for d in image_shape)
        self.capacity = int(capacity)
        self.retirement = retirement
        self.seen = 0  # images ever offered (set, add), for the reservoir rule
        self.pixels = int(np.prod(self.image_shape))
        words = -(-self.pixels // self._per_word)
        self.words = tf.Variable(tf.zeros((self.capacity, words), tf.int32), trainable=False,
                                 name="garbage_pool")
        self.size = tf.Variable(0, dtype=tf.int32, trainable=False, name="garbage_pool_size")

    def __len__(self):
        return int(self.size.numpy())

    def fill_with_noise(self, count, mean, std, rng):
        """Replaces the content with `count` Gaussian-noise images."""
        noise = rng.standard_normal((count, *self.image_shape), dtype=np.float32)
        pixels = np.asarray(mean, np.float32) + np.asarray(std, np.float32) * noise
        self.set(pixels)

    def set(self, images, seen=None):
        """Replaces the content with `images` (float pixels or uint8).

        `seen`: how many images were ever offered to a pool holding these
        (a restored checkpoint's count); default `len(images)`.
        """
        images = self._encode(images)
        if len(images) > self.capacity:
            raise ValueError(f"{len(images)} images do not fit a pool of capacity "
                             f"{self.capacity}.")
        content = np.zeros((self.capacity, *self.image_shape), self.dtype)
        content[: len(images)] = images
        self._write(content, len(images))
        self.seen = len(images) if seen is None else int(seen)

    def add(self, images, rng):
        """Adds images; once the pool is full, the retirement rule picks what stays.

        Returns:
            The number of old images that were retired. Under `random`, when
            more images come than the pool held before, the surplus beyond
            that is dropped; under `reservoir`, new images the draw rejects
            are dropped.
        """
        images = self._encode(images)
        if len(images) == 0:
            return 0
        size = len(self)
        free = self.capacity - size
        head, tail = images[:free], images[free:]
        content = self._read(self.capacity)
        content[size: size + len(head)] = head
        if self.retirement == "reservoir":
            # Algorithm R, vectorised: the k-th image offered (1-based) draws
            # j ~ U{0, ..., k-1} and takes slot j if j < capacity; where two
            # new images take one slot, the later one wins, as in the loop.
            k = self.seen + len(head) + 1 + np.arange(len(tail))
            slots = np.floor(rng.random(len(tail)) * k).astype(np.int64)
            kept = np.flatnonzero(slots < self.capacity)
            last = len(kept) - 1 - np.unique(slots[kept][::-1], return_index=True)[1]
            kept = kept[last]
            content[slots[kept]] = tail[kept]
            retired = len(kept)
        else:
            # Only images that were in the pool before this call are retired,
            # so none of the new ones displaces another new one.
            tail = tail[:size]
            if len(tail):
                slots = rng.choice(size, size=len(tail), replace=False)
                content[slots] = tail
            retired = len(tail)
        self._write(content, size + len(head))
        self.seen += len(images)
        return retired

    def _write(self, content, size):
        # Whole-variable assigns, once per epoch: under a tf.distribute
        # strategy the pool is a mirrored variable (one copy per device, so
        # train_step gathers locally), and those take `assign` but not sliced
        # or scatter updates. A pool of 50,000 CIFAR images is 150 MB.
        flat = np.zeros((self.capacity, self.words.shape[1] * self._per_word), self.dtype)
        flat[:, : self.pixels] = content.reshape(self.capacity, -1)
        self.words.assign(flat.view(np.int32))  # native byte order, as tf.bitcast reads it
        self.size.assign(size)

    def _encode(self, images):
        """Images (float pixels, or uint8 0-255) in the storage type."""
        if self.dtype == np.uint8:
            return to_uint8(images)
        images = np.asarray(images)
        if images.dtype == np.uint8:
            return (images.astype(np.float32) / 255.0).astype(np.float16)
        return images.astype(np.float16)

    def _read(self, count):
        """The first `count` stored images, [count, H, W, C] in the storage type."""
        flat = self.words[:count].numpy().view(self.dtype)[:, : self.pixels]
        return flat.reshape(count, *self.image_shape).copy()

    def sample(self, count, rng):
        """Draws `count` images uniformly with replacement, as float32 pixels (graph-safe).

        Args:
            count: number of images.
            rng: a `tf.random.Generator`, or a stateless seed (int tensor of
                shape [2]): the same seed draws the same images.
        """
        index = draw_indices(count, self.size, rng)
        words = tf.gather(self.words, index)
        pixels = tf.reshape(tf.bitcast(words, tf.as_dtype(self.dtype)),
                            [count, -1])[:, : self.pixels]
        images = tf.cast(tf.reshape(pixels, [count, *self.image_shape]), tf.float32)
        return images / 255.0 if self.dtype == np.uint8 else images

    def numpy(self):
        """The stored images, shape [size, H, W, C], in the storage type (uint8 or float16)."""
        return self._read(len(self))


def to_uint8(images):
    """Float pixels in [0, 1] (or uint8) to uint8, rounding and clipping."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)


def draw_indices(count, size, rng):
    """`count` int32 indices drawn uniformly from 0..size-1 (0 when the pool is empty).

    `rng`: a `tf.random.Generator`, or a stateless seed (int tensor of shape [2]),
    with which the same seed draws the same indices.
    """
    maxval = tf.maximum(size, 1)
    if isinstance(rng, tf.random.Generator):
        return rng.uniform([count], minval=0, maxval=maxval, dtype=tf.int32)
    return tf.random.stateless_uniform([count], rng, minval=0, maxval=maxval, dtype=tf.int32)
