"""The embedded offline dataset `digits`: scikit-learn's 8x8 handwritten digits as 28x28x1.

`sklearn.datasets.load_digits` ships 1,797 images of 8x8 pixels with values
0..16. Each is upscaled to 28x28 by bilinear interpolation (pixel centres
aligned, as `tf.image.resize` does) and scaled to 0..255 uint8, so it has
MNIST's shape. The split is `splits.stratified_split` (80/20 per class,
seed 0): 1,438 train and 359 test images, the same on every machine.
"""

import numpy as np

from keras_tie.data import registry, splits
from keras_tie.data.dataset import make_dataset

DIGITS_MAX_VALUE = 16  # load_digits counts 0..16 set pixels per 4x4 block
_SIZE = 28


def load_digits(split):
    """The `split` of the embedded digits dataset as a `Dataset`."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = upscale(bunch.images.astype(np.float64), _SIZE) * (255.0 / DIGITS_MAX_VALUE)
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    train, test = splits.stratified_split(labels)
    chosen = train if split == "train" else test
    spec = registry.resolve("digits")
    return make_dataset(
        "digits", split, images[chosen], labels[chosen], spec.class_names,
        registry.SKLEARN_SOURCE, spec.image_shape,
    )  # fmt: skip


def upscale(images, size):
    """Bilinear resize of `[N, h, w]` float images to `[N, size, size]`, as one matrix product."""
    rows = _interpolation_matrix(images.shape[1], size)
    cols = _interpolation_matrix(images.shape[2], size)
    return np.einsum("ij,njk,lk->nil", rows, images, cols)


def _interpolation_matrix(n_in, n_out):
    """Matrix `[n_out, n_in]` of bilinear weights with half-pixel centres, edges clamped."""
    centres = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    centres = np.clip(centres, 0, n_in - 1)
    low = np.floor(centres).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    frac = centres - low
    matrix = np.zeros((n_out, n_in))
    matrix[np.arange(n_out), low] += 1 - frac
    matrix[np.arange(n_out), high] += frac
    return matrix
