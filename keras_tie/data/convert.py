"""Bringing images of one dataset to another's shape, for cross-dataset OOD evaluation.

An MNIST model sees CIFAR images as 28x28 grayscale and a CIFAR model sees MNIST
as 32x32 RGB: channels with `tf.image.rgb_to_grayscale` (ITU-R 601 luma) or by
tiling the gray channel, size with `tf.image.resize` (bilinear, antialiased when
shrinking so fine patterns do not alias). Batches bound the memory of the float
copies. `restandardize` moves a set to another's per-channel mean and variance, for the
per-dataset normalisation some papers' evaluations use.
"""

import numpy as np

from keras_tie.data.errors import DatasetError

DEFAULT_BATCH_SIZE = 2048


def convert_images(images, target_shape, batch_size=DEFAULT_BATCH_SIZE):
    """`images` converted to `target_shape`, as float32 in [0, 1] units.

    Args:
        images: `[N, H, W, C]` (or `[N, H, W]`, taken as C=1), uint8 (0..255)
            or float ([0, 1] units, values outside kept as they are).
        target_shape: `(height, width, channels)`, channels 1 or 3.
        batch_size: images converted per TensorFlow call.

    Returns:
        float32 numpy array `[N, height, width, channels]`.

    Example:

    ```python
    cifar_as_mnist = convert_images(cifar.images, (28, 28, 1))
    ```
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    target_shape = tuple(int(d) for d in target_shape) if _is_shape(target_shape) else target_shape
    if not _is_shape(target_shape) or target_shape[2] not in (1, 3):
        raise DatasetError(
            "target_shape must be (height, width, channels) with channels 1 or 3. "
            f"Received: target_shape={target_shape!r}"
        )
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise DatasetError(
            "images must be [N, H, W, C] with C 1 or 3 (or [N, H, W]). "
            f"Received: images.shape={images.shape}"
        )
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise DatasetError(f"images must be uint8 or float. Received: dtype={images.dtype}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise DatasetError(
            f"batch_size must be a positive integer. Received: batch_size={batch_size!r}"
        )
    import tensorflow as tf

    height, width, channels = target_shape
    out = np.empty((len(images), height, width, channels), dtype=np.float32)
    shrinking = height < images.shape[1] or width < images.shape[2]
    for start in range(0, len(images), int(batch_size)):
        batch = tf.convert_to_tensor(images[start : start + int(batch_size)])
        batch = tf.cast(batch, tf.float32)
        if images.dtype == np.uint8:
            batch = batch / 255.0
        if batch.shape[-1] == 3 and channels == 1:
            batch = tf.image.rgb_to_grayscale(batch)  # before resizing: a third of the work
        if tuple(batch.shape[1:3]) != (height, width):
            batch = tf.image.resize(batch, (height, width), method="bilinear", antialias=shrinking)
        if batch.shape[-1] == 1 and channels == 3:
            batch = tf.tile(batch, (1, 1, 1, 3))
        out[start : start + len(batch)] = batch.numpy()
    return out


def _is_shape(value):
    try:
        return len(value) == 3 and all(int(d) == d and d > 0 for d in value)
    except (TypeError, ValueError):
        return False


def restandardize(images, mean, variance):
    """`images` moved so that each channel has the given mean and variance.

    This reproduces, in pixel units, an evaluation protocol common in PyTorch code, where
    every dataset goes through a `Normalize` with its *own* mean and std: a model whose
    input layer standardises with the training set's statistics (mean, variance) then sees
    `(x - mean_x) / std_x`, the OOD set standardised by its own statistics, instead of the
    ID standardisation a deployed model applies. It uses the OOD set's statistics, which a
    deployed detector never has, so it is an evaluation protocol to compare against papers,
    not a deployment one.

    Args:
        images: `[N, H, W, C]`, uint8 or float. Standardising removes the input's units,
            so 0..255 and [0, 1] pixels give the same result.
        mean: per-channel target mean, `[C]` (or a scalar).
        variance: per-channel target variance, `[C]` (or a scalar), positive.

    Returns:
        float32 `[N, H, W, C]`: `(x - mean_x) / std_x * sqrt(variance) + mean`, with
        mean_x and std_x each channel's statistics over all images and pixels. Values may
        leave [0, 1].
    """
    images = np.asarray(images)
    if images.ndim != 4 or not (images.dtype == np.uint8
                                or np.issubdtype(images.dtype, np.floating)):
        raise DatasetError(
            "images must be a uint8 or float [N, H, W, C] array. "
            f"Received: shape={images.shape}, dtype={images.dtype}"
        )
    channels = images.shape[-1]
    mean = np.broadcast_to(np.asarray(mean, dtype=np.float64), (channels,))
    variance = np.broadcast_to(np.asarray(variance, dtype=np.float64), (channels,))
    if not np.all(np.isfinite(mean)) or not np.all(variance > 0):
        raise DatasetError(
            "mean must be finite and variance positive, one value per channel. "
            f"Received: mean={mean.tolist()}, variance={variance.tolist()}"
        )
    own_mean = images.mean(axis=(0, 1, 2), dtype=np.float64)
    own_std = images.std(axis=(0, 1, 2), dtype=np.float64)
    if not np.all(own_std > 0):
        raise DatasetError(
            "every channel of images must vary to be restandardised. "
            f"Received: per-channel std={own_std.tolist()}"
        )
    scale = np.sqrt(variance) / own_std
    return ((images - own_mean) * scale + mean).astype(np.float32)
