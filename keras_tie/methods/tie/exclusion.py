"""The epoch level of TIE training: inversion, threshold, exclusion.

`InversionExclusion` carries out lines 5-6 and 9-22 of Algorithm 1 of the TIE
paper (001_b369f55403bc771c.txt) around each epoch of `fit()`:

- on_epoch_begin: gamma for the epoch, class weights from the class counts the
  classifier sees in the epoch (the training set plus the epoch's draw from the
  pool);
- on_epoch_end: tau_t = mean + lambda * std of UE on the training images; the
  generator produces `samples_per_class` images for each of the n + 1 classes;
  those with UE > tau_t join the pool. The per-epoch scalars of the paper's
  Figure 3 (mean entropy, confidence, margin and UE of the inverted samples),
  tau_t and the pool size go into `logs` (so into the history, the progress
  bar, CSV and TensorBoard); a grid of inverted samples per class (Figure 2) is
  written as PNG and as a TensorBoard image.

Epoch-level randomness is drawn from numpy generators seeded by (seed, epoch),
so a resumed run repeats exactly what an uninterrupted one would have done.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_tie.inference import predict_probabilities
from keras_tie.losses import balanced_class_weights
from keras_tie.training.callbacks import image_grid, write_png
from keras_tie.uncertainty import confidence, entropy, margin, uncertainty

GRID_COLUMNS = 8


class InversionExclusion(keras.callbacks.Callback):
    """Inversion and uncertainty-guided exclusion after each epoch.

    Args:
        tie_model: the `TIEModel` being trained.
        train_images: uint8 training images (for tau_t).
        train_counts: number of training images per in-distribution class.
        steps_per_epoch: classifier steps per epoch (sets the garbage count).
        threshold_lambda: lambda of tau_t = mean + lambda * std (paper: 0.5).
        samples_per_class: inverted samples per class per epoch (paper: ~1000).
        gamma_start, gamma_max: gamma = min(gamma_start * epoch, gamma_max).
        threshold_samples: training images used for tau_t (0 = all).
        seed: base seed of the epoch-level random draws.
        run_dir: where images/epoch_XXX.png go (None: no files).
        tensorboard_dir: where the image summaries go (None: none).
        invert: False for the static-garbage baseline (weights only).
        garbage_weight: multiplier on the garbage class's balanced weight.
    """

    def __init__(self, tie_model, train_images, train_counts, steps_per_epoch,
                 threshold_lambda=0.5, samples_per_class=1000, gamma_start=10.0,
                 gamma_max=100.0, threshold_samples=0, seed=0, run_dir=None,
                 tensorboard_dir=None, invert=True, garbage_weight=1.0):
        super().__init__()
        self.tie_model = tie_model
        self.train_images = train_images
        self.train_counts = np.asarray(train_counts, np.int64)
        self.steps_per_epoch = int(steps_per_epoch)
        self.threshold_lambda = float(threshold_lambda)
        self.samples_per_class = int(samples_per_class)
        self.gamma_start = float(gamma_start)
        self.gamma_max = float(gamma_max)
        self.threshold_samples = int(threshold_samples)
        self.seed = int(seed)
        self.run_dir = run_dir
        self.tensorboard_dir = tensorboard_dir
        self.invert = invert
        self.garbage_weight = float(garbage_weight)
        self.tau = None
        self._writer = None
        self._generate = None

    @classmethod
    def from_config(cls, tie_model, config, train_images, train_counts, steps_per_epoch,
                    run_dir=None):
        """The callback of a run of `config` (a `Config`): its `tie` section, its seed, and
        the run folder's images/ and logs/ (none without `run_dir`)."""
        t = config.tie
        return cls(tie_model, train_images, train_counts, steps_per_epoch, t.threshold_lambda,
                   t.samples_per_class, t.gamma_start, t.gamma_max, t.threshold_samples,
                   config.seed, run_dir, None if run_dir is None else os.path.join(run_dir, "logs"),
                   invert=tie_model.generator is not None, garbage_weight=t.garbage_weight)

    # -- epoch begin ----------------------------------------------------------

    def on_epoch_begin(self, epoch, logs=None):
        model = self.tie_model
        model.gamma.assign(min(self.gamma_start * (epoch + 1), self.gamma_max))
        counts = np.append(self.train_counts, model.garbage_per_batch * self.steps_per_epoch)
        weights = balanced_class_weights(counts)
        weights[-1] *= self.garbage_weight
        model.class_weights.assign(weights)

    # -- epoch end ------------------------------------------------------------

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        model = self.tie_model
        rng = np.random.default_rng([self.seed, epoch, 1])
        self.tau = self.threshold(rng)
        logs["tau"] = self.tau
        if self.invert:
            # gamma weighs the generator's diversity term: the static baseline has none.
            logs["gamma"] = float(model.gamma.numpy())
            images, targets = self.invert_classes(rng)
            probabilities = predict_probabilities(model.classifier, images)
            ue = uncertainty(probabilities).numpy()
            excluded = ue > self.tau
            retired = model._pool.add(images[excluded], rng)
            logs.update({
                "inv_entropy": float(np.mean(entropy(probabilities))),
                "inv_confidence": float(np.mean(confidence(probabilities))),
                "inv_margin": float(np.mean(margin(probabilities))),
                "inv_ue": float(np.mean(ue)),
                "excluded": int(excluded.sum()),
                "retired": int(retired),
            })
            self.write_grid(epoch, images, targets)
        logs["pool_size"] = len(model._pool)

    def threshold(self, rng):
        """tau_t = mean + lambda * std of UE over (a sample of) the training images."""
        images = self.train_images
        if 0 < self.threshold_samples < len(images):
            images = images[np.sort(rng.choice(len(images), self.threshold_samples,
                                               replace=False))]
        ue = uncertainty(predict_probabilities(self.tie_model.classifier, images)).numpy()
        return float(ue.mean() + self.threshold_lambda * ue.std())

    def invert_classes(self, rng, samples_per_class=None):
        """`samples_per_class` generated images for each of the n + 1 classes.

        Returns:
            (images as float32 in [0, 1] of shape [K * s, H, W, C], targets [K * s]).
        """
        model = self.tie_model
        per_class = samples_per_class or self.samples_per_class
        targets = np.repeat(np.arange(model.num_outputs, dtype=np.int32), per_class)
        if self._generate is None:
            self._generate = tf.function(self._generate_batch, reduce_retracing=True)
        # The in-graph generator's state is checkpointed, so re-seeding it from
        # (seed, epoch) keeps the generation independent of train steps.
        model.rng.reset_from_seed(int(rng.integers(2**31)))
        batches = [self._generate(tf.constant(targets[i: i + 1024]))
                   for i in range(0, len(targets), 1024)]
        return np.concatenate([b.numpy() for b in batches]), targets

    def _generate_batch(self, targets):
        z, y_soft = self.tie_model.sample_conditions(tf.shape(targets)[0], targets)
        return self.tie_model.generator([z, y_soft], training=False)

    def write_grid(self, epoch, images, targets):
        """Saves GRID_COLUMNS samples of every class as one PNG row per class."""
        if self.run_dir is None and self.tensorboard_dir is None:
            return
        rows = [images[targets == c][:GRID_COLUMNS] for c in range(self.tie_model.num_outputs)]
        grid = image_grid(np.stack(rows))
        if self.run_dir is not None:
            folder = os.path.join(self.run_dir, "images")
            os.makedirs(folder, exist_ok=True)
            write_png(os.path.join(folder, f"inverted_epoch_{epoch + 1:03d}.png"), grid)
        if self.tensorboard_dir is not None:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(
                    os.path.join(self.tensorboard_dir, "inversion"))
            with self._writer.as_default():
                tf.summary.image("inverted_samples_per_class", grid[None], step=epoch + 1)
            self._writer.flush()
