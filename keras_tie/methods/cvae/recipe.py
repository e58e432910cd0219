"""The run recipe of method `cvae` (002_50acf6af2ae3a4e5.txt), into a run folder like a TIE
run's.

Two phases, one `fit` each:

1. The CVAE (`keras_tie.methods.cvae.model.CVAE`) learns the class-conditional data
   manifold from the training images; it is saved as cvae.keras.
2. The training images are encoded once; the per-class latent Gaussians and
   95% radii are fitted (`keras_tie.methods.cvae.on_manifold`). An (n+1)-class
   classifier (the run's backbone, e.g. conv3 for 28x28, and `TIEModel`'s
   train step without a generator) is trained on the ID batches joined by
   outliers drawn from an `OutlierPool`, the OOD class weighing
   `cvae.ood_weight` (paper: 0.1) against 1 for the ID classes. Before every
   epoch the whole pool is replaced by fresh Type I and Type II outliers
   (`RegenerateOutliers`), drawn from (seed, epoch) alone, so a resumed run
   sees the outliers an uninterrupted one would.

The run folder holds::

    run.json              as a TIE run's (method cvae, num_outputs n + 1,
                          garbage_index n, tau null), plus "cvae": the CVAE's
                          shape, history, latent radii, Type I timing
    model.keras           the (n+1)-class classifier: `keras-tie evaluate` and
                          `keras-tie export` read it as a static/tie run's; its
                          OOD score is `garbage` (the OOD-class probability)
    cvae.keras            the CVAE (also the source of `tie.cvae_run`)
    cvae_history.csv      CVAE loss per epoch; history.csv: the classifier's
    images/type1.png      Type I outliers, one row per class (the paper's
                          Figure 3), clipped to [0, 1] for display;
                          type1_perturbation.png their x~ - x, scaled per
                          image; type2.png Type II outliers, one row per class
    logs/                 TensorBoard scalars (logs/cvae for phase 1)
    cvae/checkpoints/     phase-1 checkpoints; checkpoints/: phase 2's

Resuming skips phase 1 when cvae.keras exists, else continues it from its
checkpoint.

The TIE side of the bridge (`tie.cvae_run`: a TIE garbage pool seeded, and
topped up, with a cvae run's outliers) is keras_tie.methods.cvae.tie_pool.
"""

import os
import time

import keras
import numpy as np

from keras_tie.methods.cvae.model import CVAE
from keras_tie.methods.cvae.outlier_pool import OutlierPool
from keras_tie.methods.cvae.sampler import OutlierSampler
from keras_tie.methods.tie.model import TIEModel
from keras_tie.methods.tie.recipe import (
    build_config_classifier,
    classifier_record,
    classifier_test_metrics,
    classifier_validation_data,
)
from keras_tie.run_folder import (
    CVAE_FILE,
    IMAGES_DIR,
    LOGS_DIR,
    MODEL_FILE,
    RUN_FILE,
    load_model,
    run_path,
    save_model,
)
from keras_tie.training.callbacks import EpochTimer, NonFiniteStop, image_grid, write_png
from keras_tie.training.checkpoint import RunCheckpoint, latest_checkpoint, resume_from
from keras_tie.training.optimizers import classifier_optimizer
from keras_tie.training.precise_bn import recalibrate_batch_norm
from keras_tie.training.batches import epoch_batches
from keras_tie.training.recipe import BaseRecipe, Plan, history_row

CVAE_PHASE_DIR = "cvae"  # phase-1 checkpoints go to RUN_DIR/cvae/checkpoints
# Training-mixture batches the BatchNormalization statistics are recomputed on after
# training (precise_bn.py): 20 batches of 128 + 128 are 5,120 images.
BN_CALIBRATION_BATCHES = 20
FIGURE_COLUMNS = 8


class Recipe(BaseRecipe):
    """Phase 1 (the CVAE) in `build`, phase 2 (the (n+1)-class classifier) in the driver's
    `fit`; `finish` recalibrates the BatchNorm statistics, saves and tests."""

    def __init__(self, config, data, run_dir, verbose="auto"):
        super().__init__(config, data, run_dir, verbose)
        self.num_classes = data.info.num_classes
        self.mean, self.variance = data.normalization()
        self.classifier = None
        self.sampler = None
        self.regenerate = None
        self.cvae_record = None
        self.pool = None

    def record(self):
        return dict(classifier_record(self.config, self.data, self.num_classes + 1, self.mean,
                                      self.variance),
                    score="garbage: softmax probability of the OOD class (index n), higher = "
                          "more OOD")

    def build(self, resume=False):
        config, data, c = self.config, self.data, self.config.cvae
        cvae, cvae_history = train_manifold(config, self.run_dir, data.images, data.labels,
                                            self.num_classes, resume, self.verbose)
        self.sampler = OutlierSampler(cvae, data.images, data.labels, (c.beta_min, c.beta_max),
                                      c.coverage, c.jacobian_batch, c.clip_type1)
        figures = write_figures(self.run_dir, self.sampler, config.seed)
        self.cvae_record = {
            "latent_dim": cvae.latent_dim, "width": cvae.width, "hidden_units": cvae.hidden_units,
            "parameters": int(cvae.count_params()), "history": cvae_history,
            "latent_radii": self.sampler.stats.radii.tolist(),
            "latent_counts": self.sampler.stats.counts.tolist(),
            "coverage": self.sampler.stats.coverage, "figures": figures, "status": "trained",
        }
        self.classifier = build_config_classifier(config, data.info, self.num_classes + 1,
                                                  self.mean, self.variance)
        self.pool = pool = OutlierPool(data.info.image_shape, c.type1_per_epoch + c.type2_per_epoch)
        model = TIEModel(self.classifier, pool, generator=None,
                         garbage_per_batch=c.ood_per_batch or config.batch_size,
                         seed=config.seed)
        model.compile(classifier_optimizer(config, data.steps_per_epoch))
        model.class_weights.assign(ood_class_weights(self.num_classes, c.ood_weight))
        trackables = {"classifier": self.classifier, "optimizer": model.optimizer,
                      "rng": model.rng, "class_weights": model.class_weights}
        self.regenerate = RegenerateOutliers(self.sampler, pool, c.type1_per_epoch,
                                             c.type2_per_epoch, config.seed)
        # After the epoch timer's start, so epoch_seconds includes the outlier generation.
        return Plan(model, trackables, record={"cvae": self.cvae_record},
                    untimed=[self.regenerate],
                    validation_data=classifier_validation_data(data))

    def finish(self, plan):
        config = self.config
        calibration = calibration_batches(self.sampler, self.data.images, config,
                                          plan.model.garbage_per_batch)
        batch_norm = {
            "recalibrated": recalibrate_batch_norm(self.classifier, calibration),
            "images": int(sum(len(b) for b in calibration)),
            "rule": "keras_tie.training.precise_bn.recalibrate_batch_norm"}
        save_model(self.classifier, run_path(self.run_dir, MODEL_FILE))
        test_metrics = classifier_test_metrics(self.classifier, config, self.data.info, None,
                                               True)
        self.cvae_record["type1_seconds_per_1000"] = self.regenerate.type1_seconds_per_1000()
        return test_metrics, {"batch_norm": batch_norm, "cvae": self.cvae_record, "tau": None,
                              "pool_size": len(self.pool)}


def train_manifold(config, run_dir, images, labels, num_classes, resume=False, verbose="auto"):
    """Phase 1: (the trained CVAE, its history), from cvae.keras when a resumed run has it."""
    c = config.cvae
    path = run_path(run_dir, CVAE_FILE)
    phase_dir = os.path.join(run_dir, CVAE_PHASE_DIR)
    checkpoint = latest_checkpoint(phase_dir) if resume else None
    if resume and os.path.isfile(path):
        cvae = load_model(path)
        return cvae, (checkpoint[1].get("history", []) if checkpoint else [])
    cvae = CVAE(images.shape[1:], num_classes, c.latent_dim, c.width, c.hidden_units,
                seed=config.seed)
    cvae.compile(keras.optimizers.Adam(c.learning_rate))
    cvae.optimizer.build(cvae.trainable_variables)
    trackables = {"cvae": cvae, "optimizer": cvae.optimizer}
    initial_epoch, history, _ = resume_from(checkpoint, trackables)

    def checkpoint_state(epoch, logs):
        history.append(dict(history_row(logs), epoch=epoch))
        return {"history": history}

    # Its own batch order (seed + 1): the classifier's epochs use `seed`.
    dataset = epoch_batches(images, labels, config.batch_size, config.seed + 1, initial_epoch,
                            c.vae_epochs)
    # A non-finite loss fails the run, as in phase 2, keeping the last finite checkpoint.
    guard = NonFiniteStop(run_path(run_dir, RUN_FILE), "cvae.learning_rate", "CVAE")
    fit_callbacks = [
        EpochTimer(),
        guard,
        RunCheckpoint(phase_dir, trackables, checkpoint_state, None, config.checkpoint_every,
                      c.vae_epochs, config.checkpoint_keep, guard),
        keras.callbacks.CSVLogger(os.path.join(run_dir, "cvae_history.csv"), append=resume),
        keras.callbacks.TensorBoard(os.path.join(run_dir, LOGS_DIR, "cvae"), write_graph=False),
    ]
    if initial_epoch < c.vae_epochs:
        if verbose:
            print(f"Phase 1/2: CVAE, {c.vae_epochs} epochs (latent_dim={c.latent_dim})")
        cvae.fit(dataset, epochs=c.vae_epochs, initial_epoch=initial_epoch,
                 steps_per_epoch=len(images) // config.batch_size, callbacks=fit_callbacks,
                 verbose=verbose, shuffle=False)
        if verbose:
            print(f"Phase 2/2: (n+1)-class classifier, {config.epochs} epochs")
    save_model(cvae, path)
    return cvae, history


def calibration_batches(sampler, images, config, ood_per_batch):
    """`BN_CALIBRATION_BATCHES` batches mixed as in training: `batch_size` training images and
    `ood_per_batch` fresh outliers (Type I and Type II in the pool's proportion), from
    (seed, 3) alone, so a resumed run recalibrates identically."""
    c = config.cvae
    rng = np.random.default_rng([config.seed, 3])
    count = BN_CALIBRATION_BATCHES * ood_per_batch
    first = int(round(count * c.type1_per_epoch / (c.type1_per_epoch + c.type2_per_epoch)))
    outliers = np.concatenate([sampler.type1(first, rng)[0], sampler.type2(count - first, rng)[0]])
    outliers = outliers[rng.permutation(count)]
    index = rng.choice(len(images), BN_CALIBRATION_BATCHES * config.batch_size,
                       replace=len(images) < BN_CALIBRATION_BATCHES * config.batch_size)
    return [np.concatenate([
        images[index[i * config.batch_size: (i + 1) * config.batch_size]].astype(np.float32)
        / 255.0, outliers[i * ood_per_batch: (i + 1) * ood_per_batch]])
        for i in range(BN_CALIBRATION_BATCHES)]


def ood_class_weights(num_classes, ood_weight):
    """[1, ..., 1, ood_weight]: per-sample loss weights of the n ID classes and the OOD class."""
    return np.append(np.ones(num_classes, np.float32), np.float32(ood_weight))


class RegenerateOutliers(keras.callbacks.Callback):
    """Replaces the outlier pool with fresh Type I and Type II outliers before each epoch.

    The draws come from a numpy generator seeded by (seed, epoch), so they do
    not depend on anything a resumed run would lose. Adds to the epoch's logs
    `type1_seconds_per_1000` (Type I generation time per 1000 samples, this
    epoch) and `outlier_seconds` (both types, this epoch).

    Args:
        sampler: an `OutlierSampler`.
        pool: the `OutlierPool` the classifier samples from.
        type1, type2: outliers of each type per epoch.
        seed: base seed.
    """

    def __init__(self, sampler, pool, type1, type2, seed=0):
        super().__init__()
        self.sampler = sampler
        self.pool = pool
        self.type1 = int(type1)
        self.type2 = int(type2)
        self.seed = int(seed)
        self._logs = {}

    def on_epoch_begin(self, epoch, logs=None):
        rng = np.random.default_rng([self.seed, epoch, 2])
        seconds, count = self.sampler.type1_seconds, self.sampler.type1_count
        start = time.perf_counter()
        off, _ = self.sampler.type1(self.type1, rng)
        on, _ = self.sampler.type2(self.type2, rng)
        self.pool.set(np.concatenate([off, on]))
        self._logs = {"outlier_seconds": time.perf_counter() - start}
        if self.type1:
            self._logs["type1_seconds_per_1000"] = 1000.0 * (
                self.sampler.type1_seconds - seconds) / (self.sampler.type1_count - count)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs.update(self._logs)

    def type1_seconds_per_1000(self):
        return self.sampler.type1_seconds_per_1000


def write_figures(run_dir, sampler, seed=0):
    """images/type1.png, type1_perturbation.png and type2.png (one row per class); their
    paths relative to the run folder."""
    rng = np.random.default_rng([seed, 99])
    labels = sampler.labels
    num_classes = sampler.cvae.num_classes
    index = np.concatenate([rng.choice(np.flatnonzero(labels == k), FIGURE_COLUMNS,
                                       replace=int(np.sum(labels == k)) < FIGURE_COLUMNS)
                            for k in range(num_classes)])
    off = sampler.type1_at(index, rng)
    original = sampler.pixels_of(index)
    shape = (num_classes, FIGURE_COLUMNS, *sampler.image_shape)
    change = (off - original).reshape(len(index), -1)
    change = 0.5 + 0.5 * change / np.maximum(np.abs(change).max(axis=1, keepdims=True), 1e-12)
    on, classes = sampler.type2(FIGURE_COLUMNS * num_classes, rng)
    on = np.concatenate([on[classes == k] for k in range(num_classes)])
    files = {"type1": os.path.join(IMAGES_DIR, "type1.png"),
             "type1_perturbation": os.path.join(IMAGES_DIR, "type1_perturbation.png"),
             "type2": os.path.join(IMAGES_DIR, "type2.png")}
    grids = {"type1": np.clip(off, 0, 1), "type1_perturbation": change, "type2": on}
    for key, relative in files.items():
        write_png(os.path.join(run_dir, relative),
                  image_grid(np.asarray(grids[key], np.float32).reshape(shape)))
    return files
