"""OutlierSampler: Type I and Type II outliers of one trained CVAE and one training set.

Used by the `cvae` method (the whole extra class, regenerated every epoch) and
by TIE (`tie.cvae_run`: the garbage pool seeded, and optionally topped up
every epoch, with CVAE outliers instead of Gaussian noise).
"""

import os
import time

import numpy as np
import tensorflow as tf

from keras_tie import run_folder
from keras_tie.methods.cvae.off_manifold import off_manifold_samples
from keras_tie.methods.cvae.on_manifold import COVERAGE, fit_latent_stats, sample_ellipsoid

BETA_RANGE = (0.1, 1.0)  # 002_50acf6af2ae3a4e5.txt, section 3.1: beta ~ U[0.1, 1]


class OutlierSampler:
    """Draws Type I (off-manifold) and Type II (on-manifold) outliers.

    On construction the training images are encoded once (mean encodings);
    Type I perturbs randomly chosen training images at their codes, Type II
    decodes points on each class's coverage ellipsoid (see
    `keras_tie.methods.cvae.off_manifold` and `keras_tie.methods.cvae.on_manifold` for the
    maths). Randomness comes from the numpy generator passed to each call.

    Args:
        cvae: a trained `keras_tie.methods.cvae.model.CVAE`.
        images: uint8 (or float in [0, 1]) training images [N, H, W, C].
        labels: int labels [N].
        beta_range: (low, high) of beta ~ U[low, high] (paper: 0.1, 1).
        coverage: the share of codes inside the Type II ellipsoid (paper: 0.95).
        batch_size: images per Jacobian pass (the pass runs d times as many
            decoder rows).
        clip_type1: clip Type I samples to [0, 1] (default: no, the paper's
            x + beta v is a point of R^D).

    Example:

    ```python
    sampler = OutlierSampler(cvae, train_images, train_labels)
    rng = np.random.default_rng(0)
    off, _ = sampler.type1(1000, rng)
    on, _ = sampler.type2(1000, rng)
    ```
    """

    def __init__(self, cvae, images, labels, beta_range=BETA_RANGE, coverage=COVERAGE,
                 batch_size=512, clip_type1=False):
        low, high = (float(b) for b in beta_range)
        if not 0.0 <= low <= high:
            raise ValueError(f"beta_range must satisfy 0 <= low <= high. Received: "
                             f"beta_range={beta_range}")
        if len(images) != len(labels) or len(images) == 0:
            raise ValueError(f"images and labels must be non-empty and of the same length. "
                             f"Received: {len(images)} images, {len(labels)} labels")
        if tuple(images.shape[1:]) != cvae.image_shape:
            raise ValueError(f"The CVAE takes {cvae.image_shape} images. Received: images of "
                             f"shape {tuple(images.shape[1:])}")
        self.cvae = cvae
        self.images = images
        self.labels = np.asarray(labels, np.int32)
        self.beta_range = (low, high)
        self.batch_size = int(batch_size)
        self.clip_type1 = bool(clip_type1)
        self.image_shape = cvae.image_shape
        self.pixels = int(np.prod(self.image_shape))
        self._encode = tf.function(
            lambda x, y: cvae.encode(x, y)[0],
            input_signature=[tf.TensorSpec([None, *self.image_shape], tf.float32),
                             tf.TensorSpec([None], tf.int32)], autograph=False)
        self._decode = tf.function(
            lambda z, y: cvae.decode(z, y),
            input_signature=[tf.TensorSpec([None, cvae.latent_dim], tf.float32),
                             tf.TensorSpec([None], tf.int32)], autograph=False)
        self._type1 = tf.function(
            lambda x, y, z, u, b: off_manifold_samples(cvae, x, y, z, u, b)[0],
            input_signature=[tf.TensorSpec([None, *self.image_shape], tf.float32),
                             tf.TensorSpec([None], tf.int32),
                             tf.TensorSpec([None, cvae.latent_dim], tf.float32),
                             tf.TensorSpec([None, self.pixels], tf.float32),
                             tf.TensorSpec([None], tf.float32)], autograph=False)
        self.codes = self.encode(images, self.labels)
        self.stats = fit_latent_stats(self.codes, self.labels, cvae.num_classes, coverage)
        self.type1_seconds = 0.0
        self.type1_count = 0

    @classmethod
    def from_run(cls, run_dir, images, labels, dataset=None, **kwargs):
        """A sampler of the CVAE of a finished `cvae` run folder (its cvae.keras).

        Raises:
            FileNotFoundError: no cvae.keras in `run_dir`.
            ValueError: the run was trained on another dataset than `dataset`.
        """
        path = run_folder.run_path(run_dir, run_folder.CVAE_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{run_dir!r} holds no {run_folder.CVAE_FILE}. Received: "
                f"tie.cvae_run={run_dir!r}; pass "
                "the folder of a `keras-tie train --method cvae` run whose CVAE phase finished.")
        trained_on = run_folder.read_record(run_dir).get("dataset") \
            if run_folder.is_run(run_dir) else None
        if dataset is not None and trained_on is not None and trained_on != dataset:
            raise ValueError(f"The CVAE of {run_dir!r} was trained on {trained_on!r}, not on "
                             f"{dataset!r}. Received: tie.cvae_run={run_dir!r}")
        cvae = run_folder.load_model(path)
        return cls(cvae, images, labels, **kwargs)

    def encode(self, images, labels):
        """Mean encodings [N, d] of uint8 or float images."""
        codes = [self._encode(tf.constant(_to_float(images[i: i + 1024])),
                              tf.constant(labels[i: i + 1024], tf.int32)).numpy()
                 for i in range(0, len(images), 1024)]
        return np.concatenate(codes)

    def type1(self, count, rng):
        """`count` Type I samples from uniformly drawn training images.

        Returns:
            (float32 samples [count, H, W, C], the source images' labels [count]).
        """
        index = rng.choice(len(self.images), count, replace=count > len(self.images))
        return self.type1_at(index, rng), self.labels[index]

    def type1_at(self, index, rng):
        """Type I samples of the training images at `index` (float32 [len(index), H, W, C])."""
        low, high = self.beta_range
        start = time.perf_counter()
        samples = []
        for i in range(0, len(index), self.batch_size):
            chunk = index[i: i + self.batch_size]
            noise = rng.standard_normal((len(chunk), self.pixels), dtype=np.float32)
            beta = rng.uniform(low, high, len(chunk)).astype(np.float32)
            samples.append(self._type1(
                tf.constant(self.pixels_of(chunk)), tf.constant(self.labels[chunk]),
                tf.constant(self.codes[chunk]), tf.constant(noise), tf.constant(beta)).numpy())
        self.type1_seconds += time.perf_counter() - start
        self.type1_count += len(index)
        samples = np.concatenate(samples) if samples else \
            np.zeros((0, *self.image_shape), np.float32)
        return np.clip(samples, 0.0, 1.0) if self.clip_type1 else samples

    def pixels_of(self, index):
        """The training images at `index` as float32 in [0, 1]."""
        return _to_float(self.images[index])

    def type2(self, count, rng):
        """`count` Type II samples, classes in turn (counts differ by at most one).

        Returns:
            (float32 samples in [0, 1] [count, H, W, C], their classes [count]).
        """
        classes = np.arange(count, dtype=np.int32) % self.cvae.num_classes
        z = np.zeros((count, self.cvae.latent_dim), np.float32)
        s = self.stats
        for c in range(self.cvae.num_classes):
            rows = classes == c
            z[rows] = sample_ellipsoid(s.means[c], s.covariances[c], s.radii[c],
                                       int(rows.sum()), rng)
        samples = [self._decode(tf.constant(z[i: i + 1024]),
                                tf.constant(classes[i: i + 1024])).numpy()
                   for i in range(0, count, 1024)]
        samples = np.concatenate(samples) if samples else \
            np.zeros((0, *self.image_shape), np.float32)
        return samples, classes

    def mixed(self, count, rng, type1_share=0.5):
        """`count` outliers: round(count * type1_share) of Type I, the rest Type II, shuffled."""
        first = int(round(count * type1_share))
        off, _ = self.type1(first, rng)
        on, _ = self.type2(count - first, rng)
        both = np.concatenate([off, on])
        return both[rng.permutation(len(both))]

    @property
    def type1_seconds_per_1000(self):
        """Wall time of Type I generation per 1000 samples so far (None before any)."""
        return 1000.0 * self.type1_seconds / self.type1_count if self.type1_count else None


def _to_float(images):
    images = np.asarray(images)
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 \
        else images.astype(np.float32, copy=False)
