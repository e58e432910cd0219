"""Synthetic OOD sets: Gaussian noise, uniform noise and points on a sphere.

As defined in the TIE paper (/work/shared/papers/002_50acf6af2ae3a4e5.txt,
section 4.1, lines 286-292), in [0, 1] pixel units, i.i.d. per pixel and channel:

    gaussian:  x ~ N(0.5, 1), not clipped (the paper does not clip; `clip=True`
               clips to [0, 1] for models that assume that range)
    uniform:   x ~ U[0, 1]
    sphere:    x = r * g / ||g||, g ~ N(0, I), r the largest L2 norm of the
               reference (in-distribution training) images, so every sample lies
               on the sphere that just encloses the training set

Images are float32 `[count, H, W, C]` with the reference's shape; labels are -1.
"""

import numpy as np

from keras_tie.data import registry
from keras_tie.data.dataset import Dataset, DatasetInfo, to_float
from keras_tie.data.errors import DatasetError

GAUSSIAN_MEAN = 0.5  # TIE paper, section 4.1: "0.5 mean and unit-variance"
GAUSSIAN_STD = 1.0
DEFAULT_COUNT = 10000  # the size of the MNIST and CIFAR test sets
OOD_LABEL = -1

_NORM_CHUNK = 4096


def generate(name, split, like=None, count=None, seed=0, radius=None, clip=False, image_shape=None):
    """The synthetic OOD set `name` (`"gaussian"`, `"uniform"` or `"sphere"`) as a `Dataset`.

    Args:
        name: which set.
        split: recorded in the info only; use different seeds for different splits.
        like: the reference: a `Dataset`, a `DatasetInfo` or an `(H, W, C)` tuple.
            `sphere` needs a `Dataset` (its largest image norm) unless `radius` is given.
        count: number of images; `None` means `DEFAULT_COUNT`.
        seed: seed of `numpy.random.default_rng`.
        radius: the sphere's radius in [0, 1] units, instead of the reference's.
        clip: clip Gaussian noise to [0, 1] (default `False`, as in the paper).
        image_shape: generate at this `(H, W, C)` instead of the reference's shape.
    """
    shape = tuple(image_shape) if image_shape is not None else reference_shape(like, name)
    count = DEFAULT_COUNT if count is None else count
    if isinstance(count, bool) or int(count) != count or count < 0:
        raise DatasetError(f"count must be a non-negative integer. Received: count={count!r}")
    count = int(count)
    rng = np.random.default_rng(seed)
    size = (count, *shape)
    if name == "gaussian":
        images = rng.standard_normal(size, dtype=np.float32) * np.float32(GAUSSIAN_STD)
        images += np.float32(GAUSSIAN_MEAN)
        if clip:
            images = np.clip(images, 0.0, 1.0)
    elif name == "uniform":
        # TIE paper, section 4.1: "uniform distribution in the range [0, 1]".
        images = rng.random(size, dtype=np.float32)
    elif name == "sphere":
        r = reference_radius(like) if radius is None else float(radius)
        if not np.isfinite(r) or r <= 0:
            raise DatasetError(
                f"The sphere radius must be a positive number. Received: radius={r!r}"
            )
        flat = rng.standard_normal((count, int(np.prod(shape))))
        flat *= r / np.linalg.norm(flat, axis=1, keepdims=True)
        images = flat.reshape(size)  # float64 until here, so every norm is r to float32 precision
    else:
        raise DatasetError(f"Unknown synthetic set. Received: name={name!r}")
    info = DatasetInfo(name, split, (), shape, 0, registry.SYNTHETIC_SOURCE)
    labels = np.full(count, OOD_LABEL, dtype=np.int64)
    return Dataset(images.astype(np.float32, copy=False), labels, info)


def reference_shape(like, name="synthetic"):
    """`(H, W, C)` of `like`: a `Dataset`, `DatasetInfo` or shape tuple."""
    if isinstance(like, Dataset):
        return like.info.image_shape
    if isinstance(like, DatasetInfo):
        return like.image_shape
    if isinstance(like, (tuple, list)) and len(like) == 3 and all(_positive_int(d) for d in like):
        return tuple(int(d) for d in like)
    raise DatasetError(
        f"{name} needs a reference for its image shape: like= a Dataset, a DatasetInfo or an "
        f"(H, W, C) tuple. Received: like={like!r}"
    )


def reference_radius(like):
    """The largest L2 norm of `like`'s images in [0, 1] units (uint8 / 255)."""
    if not isinstance(like, Dataset):
        raise DatasetError(
            "sphere needs the reference training images to measure their largest norm: pass "
            f"like= a Dataset, or radius=. Received: like={type(like).__name__}"
        )
    if len(like) == 0:
        raise DatasetError("sphere needs a non-empty reference Dataset. Received: an empty Dataset")
    largest = 0.0
    for start in range(0, len(like), _NORM_CHUNK):
        chunk = to_float(like.images[start : start + _NORM_CHUNK])
        chunk = chunk.reshape(len(chunk), -1).astype(np.float64)
        largest = max(largest, float(np.sqrt(np.square(chunk).sum(axis=1)).max()))
    return largest


def _positive_int(value):
    try:
        return int(value) == value and value > 0
    except (TypeError, ValueError):
        return False
