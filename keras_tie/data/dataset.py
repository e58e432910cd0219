"""`DatasetInfo` and `Dataset`: the arrays of one split plus what describes them.

TensorFlow is imported only inside `Dataset.to_tf_dataset`, so holding a
`Dataset` costs nothing but numpy.
"""

import dataclasses

import numpy as np

from keras_tie.data.errors import CorruptDataError, DatasetError

# Images per chunk when statistics are computed in float64: bounds the temporary
# memory to chunk * H * W * C * 8 bytes instead of a float copy of the whole split.
_STATS_CHUNK = 4096


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What describes one split of a dataset.

    Args:
        name: the dataset name as registered (`"mnist"`, `"folder:/data/cats"`).
        split: `"train"` or `"test"`.
        class_names: one name per label, label `i` is `class_names[i]`; empty
            for synthetic OOD sets, whose labels are all -1.
        image_shape: `(height, width, channels)`.
        num_classes: `len(class_names)`.
        source: where the arrays came from: a file or folder path,
            `"tensorflow-datasets"`, `"synthetic"` or `"scikit-learn"`.
    """

    name: str
    split: str
    class_names: tuple
    image_shape: tuple
    num_classes: int
    source: str

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        object.__setattr__(self, "image_shape", tuple(int(d) for d in self.image_shape))
        if len(self.image_shape) != 3:
            raise DatasetError(
                "image_shape must be (height, width, channels). "
                f"Received: image_shape={self.image_shape}"
            )
        if self.num_classes != len(self.class_names):
            raise DatasetError(
                "num_classes must equal the number of class names. "
                f"Received: num_classes={self.num_classes}, "
                f"len(class_names)={len(self.class_names)}"
            )

    @property
    def channels(self):
        """Number of image channels: 1 (grayscale) or 3 (RGB)."""
        return self.image_shape[2]


class Dataset:
    """The images and labels of one split, with their `DatasetInfo`.

    Real data holds uint8 NHWC images (0..255) and int64 labels 0..n-1; synthetic
    OOD sets and images passed through `convert_images` hold float32 images in
    [0, 1] units, and synthetic labels are -1.

    Args:
        images: array `[N, H, W, C]`.
        labels: int array `[N]`.
        info: the `DatasetInfo` of this split.
        skipped: files that could not be decoded and were left out (notMNIST
            has a few); empty for most datasets.

    Example:

    ```python
    ds = keras_tie.data.load("mnist", split="train")
    ds.images.shape, ds.info.class_names
    train = ds.to_tf_dataset(batch_size=128, shuffle=True, seed=0)
    ```
    """

    def __init__(self, images, labels, info, skipped=()):
        images = np.asarray(images)
        labels = np.asarray(labels, dtype=np.int64)
        if images.ndim != 4:
            raise DatasetError(
                f"images must be a 4-D array [N, H, W, C]. Received: images.shape={images.shape}"
            )
        if labels.shape != (images.shape[0],):
            raise DatasetError(
                "labels must be a 1-D array with one label per image. "
                f"Received: images.shape={images.shape}, labels.shape={labels.shape}"
            )
        if tuple(images.shape[1:]) != info.image_shape:
            raise DatasetError(
                "images do not have the shape given in info. "
                f"Received: images.shape={images.shape}, info.image_shape={info.image_shape}"
            )
        self.images = images
        self.labels = labels
        self.info = info
        self.skipped = tuple(skipped)

    def __len__(self):
        return int(self.images.shape[0])

    def __repr__(self):
        return (
            f"Dataset(name={self.info.name!r}, split={self.info.split!r}, n={len(self)}, "
            f"image_shape={self.info.image_shape}, dtype={self.images.dtype}, "
            f"num_classes={self.info.num_classes}, source={self.info.source!r})"
        )

    def as_float(self):
        """The images as float32 in [0, 1] units (uint8 / 255); float images as they are."""
        return to_float(self.images)

    def channel_stats(self):
        """Per-channel mean and standard deviation in [0, 1] units, as float64 arrays `[C]`."""
        channels = self.images.shape[-1]
        total = np.zeros(channels)
        total_sq = np.zeros(channels)
        count = 0
        for start in range(0, len(self), _STATS_CHUNK):
            chunk = to_float(self.images[start : start + _STATS_CHUNK]).astype(np.float64)
            total += chunk.sum(axis=(0, 1, 2))
            total_sq += np.square(chunk).sum(axis=(0, 1, 2))
            count += chunk.shape[0] * chunk.shape[1] * chunk.shape[2]
        if count == 0:
            return np.full(channels, np.nan), np.full(channels, np.nan)
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
        return mean, std

    def with_arrays(self, images, labels, **info_changes):
        """A new `Dataset` with other arrays (and info fields), `skipped` kept."""
        info = dataclasses.replace(self.info, **info_changes)
        return Dataset(images, labels, info, skipped=self.skipped)

    def to_tf_dataset(self, batch_size=None, shuffle=False, seed=None, drop_remainder=False):
        """A `tf.data.Dataset` of `(float32 image in [0, 1], int64 label)`, prefetched.

        The pipeline holds the images as they are stored (uint8 for real data) and
        converts each element or batch to float inside a `map`, so memory holds
        one uint8 copy rather than a float32 one four times larger.

        Args:
            batch_size: batch the elements; `None` yields single examples.
            shuffle: reshuffle the whole split at every epoch.
            seed: seed of the shuffle, for reproducible orders.
            drop_remainder: drop the last, smaller batch.
        """
        import tensorflow as tf

        if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
            raise DatasetError(
                "batch_size must be a positive integer or None. "
                f"Received: batch_size={batch_size!r}"
            )
        pipeline = tf.data.Dataset.from_tensor_slices((self.images, self.labels))
        if shuffle:
            pipeline = pipeline.shuffle(max(len(self), 1), seed=seed, reshuffle_each_iteration=True)
        if batch_size is not None:
            pipeline = pipeline.batch(int(batch_size), drop_remainder=drop_remainder)
        scale = 1.0 / 255.0 if self.images.dtype == np.uint8 else 1.0

        def normalise(image, label):
            return tf.cast(image, tf.float32) * scale, label

        pipeline = pipeline.map(normalise, num_parallel_calls=tf.data.AUTOTUNE)
        return pipeline.prefetch(tf.data.AUTOTUNE)


def to_float(images):
    """float32 images in [0, 1] units: uint8 / 255, float arrays cast as they are."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(images.dtype, np.floating):
        return images.astype(np.float32, copy=False)
    raise DatasetError(
        f"images must be uint8 (0..255) or float ([0, 1] units). Received: dtype={images.dtype}"
    )


def make_dataset(name, split, images, labels, class_names, source, image_shape=None, skipped=()):
    """A `Dataset`, after checking counts, shape, and that every label names a class."""
    if len(images) != len(labels):
        raise CorruptDataError(
            f"{source}: {name} needs one label per image. "
            f"Received: {len(images)} images and {len(labels)} labels"
        )
    if image_shape is not None and tuple(images.shape[1:]) != tuple(image_shape):
        raise CorruptDataError(
            f"{source}: {name} images must be {tuple(image_shape)}. "
            f"Received: image shape {tuple(images.shape[1:])}"
        )
    check_labels(labels, len(class_names), source)
    info = DatasetInfo(name, split, tuple(class_names), images.shape[1:], len(class_names), source)
    return Dataset(images, labels, info, skipped=skipped)


def check_labels(labels, num_classes, source):
    """Raises `CorruptDataError` naming `source` unless every label is in 0..num_classes-1."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise CorruptDataError(
            f"{source}: labels must be in 0..{num_classes - 1}. "
            f"Received: {bad.size} label(s) outside, e.g. label={int(bad[0])}"
        )
