"""Runs a `cvae` training job (002_50acf6af2ae3a4e5.txt) into a run folder like a TIE run's.

Two phases, one `fit` each:

1. The CVAE (`keras_tie.models.cvae.CVAE`) learns the class-conditional data
   manifold from the training images; it is saved as cvae.keras.
2. The training images are encoded once; the per-class latent Gaussians and
   95% radii are fitted (`keras_tie.cvae.on_manifold`). An (n+1)-class
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

`tie_pool_callbacks` is the TIE side of the bridge: with `tie.cvae_run` it
seeds a TIE garbage pool with a cvae run's outliers and, with
`tie.cvae_per_epoch`, tops it up every epoch.
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf

from keras_tie._io import read_json, write_json
from keras_tie.config import ConfigError
from keras_tie.cvae.sampler import CVAE_FILE, OutlierSampler
from keras_tie.models import build_classifier, resolve_backbone
from keras_tie.models.cvae import CVAE
from keras_tie.training.callbacks import EpochTimer, image_grid, write_png
from keras_tie.training.checkpoint import (
    RunCheckpoint,
    latest_checkpoint,
    resume_from,
)
from keras_tie.training.outlier_pool import OutlierPool
from keras_tie.training.precise_bn import recalibrate_batch_norm
from keras_tie.training.runner import (
    MODEL_FILE,
    RUN_FILE,
    RunResult,
    _plain,
    _save_model,
    classifier_optimizer,
    epoch_batches,
    evaluate_test,
    load_training_data,
    run_callbacks,
    run_record,
)
from keras_tie.training.tie_model import TIEModel

CVAE_PHASE_DIR = "cvae"  # phase-1 checkpoints go to RUN_DIR/cvae/checkpoints
# Training-mixture batches the BatchNormalization statistics are recomputed on after
# training (precise_bn.py): 20 batches of 128 + 128 are 5,120 images.
BN_CALIBRATION_BATCHES = 20
FIGURE_COLUMNS = 8


def train_cvae(config, run_dir, resume=False, verbose="auto", callbacks=()):
    """Trains the CVAE and the (n+1)-class classifier of `config` (method `cvae`) into `run_dir`.

    Called by `keras_tie.training.runner.train`, which has resolved `config`
    (from run.json when resuming) and created the folder. `callbacks` go to
    the classifier's `fit`.

    Returns:
        A `RunResult` (tau None: the OOD score is the OOD-class probability).
    """
    c = config.cvae
    run_file = os.path.join(run_dir, RUN_FILE)
    train_set, images, labels, held_images, held_labels = load_training_data(config)
    info = train_set.info
    num_classes = info.num_classes
    mean, std = train_set.channel_stats()
    mean = mean.astype(np.float32)
    variance = np.maximum(np.square(std), 1e-6).astype(np.float32)
    steps_per_epoch = len(images) // config.batch_size

    run_info = read_json(run_file) if resume and os.path.isfile(run_file) else {}
    run_info.update(run_record(
        config, info, len(images), steps_per_epoch,
        num_classes=num_classes, num_outputs=num_classes + 1, garbage_index=num_classes,
        normalization={"mean": mean.tolist(), "variance": variance.tolist()},
        backbone=resolve_backbone(config.model.backbone, info.image_shape),
        score="garbage: softmax probability of the OOD class (index n), higher = more OOD"))
    write_json(run_file, run_info)

    cvae, cvae_history = train_manifold(config, run_dir, images, labels, num_classes, resume,
                                        verbose)
    sampler = OutlierSampler(cvae, images, labels, (c.beta_min, c.beta_max), c.coverage,
                             c.jacobian_batch, c.clip_type1)
    figures = write_figures(run_dir, sampler, config.seed)
    run_info["cvae"] = {
        "latent_dim": cvae.latent_dim, "width": cvae.width, "hidden_units": cvae.hidden_units,
        "parameters": int(cvae.count_params()), "history": cvae_history,
        "latent_radii": sampler.stats.radii.tolist(),
        "latent_counts": sampler.stats.counts.tolist(), "coverage": sampler.stats.coverage,
        "figures": figures, "status": "trained",
    }
    write_json(run_file, run_info)

    classifier = build_classifier(info.image_shape, num_classes + 1, config.model.backbone,
                                  config.model.width, config.model.dense_units, mean, variance,
                                  config.model.bn_momentum, config.model.dropout,
                                  precision=config.model.precision)
    pool = OutlierPool(info.image_shape, c.type1_per_epoch + c.type2_per_epoch)
    model = TIEModel(classifier, pool, generator=None,
                     garbage_per_batch=c.ood_per_batch or config.batch_size, seed=config.seed)
    model.compile(classifier_optimizer(config, steps_per_epoch))
    model.class_weights.assign(ood_class_weights(num_classes, c.ood_weight))
    trackables = {"classifier": classifier, "optimizer": model.optimizer, "rng": model.rng,
                  "class_weights": model.class_weights}

    checkpoint = latest_checkpoint(run_dir) if resume else None
    initial_epoch, history, _ = resume_from(checkpoint, trackables)

    def checkpoint_state(epoch, logs):
        history.append(dict(_plain(logs), epoch=epoch))
        return {"history": history}

    dataset = epoch_batches(images, labels, config.batch_size, config.seed, initial_epoch,
                            config.epochs, config.augment)
    validation_data = None if held_images is None else tf.data.Dataset.from_tensor_slices(
        (held_images.astype(np.float32) / 255.0, held_labels)).batch(512)
    regenerate = RegenerateOutliers(sampler, pool, c.type1_per_epoch, c.type2_per_epoch,
                                    config.seed)
    # The timer comes first, so epoch_seconds includes the outlier generation.
    fit_callbacks = [EpochTimer(), regenerate,
                     *run_callbacks(run_dir, trackables, checkpoint_state, config, resume,
                                    callbacks)]
    if initial_epoch < config.epochs:
        model.fit(dataset, epochs=config.epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=steps_per_epoch, callbacks=fit_callbacks, verbose=verbose,
                  shuffle=False, validation_data=validation_data)
    calibration = calibration_batches(sampler, images, config, model.garbage_per_batch)
    run_info["batch_norm"] = {
        "recalibrated": recalibrate_batch_norm(classifier, calibration),
        "images": int(sum(len(b) for b in calibration)),
        "rule": "keras_tie.training.precise_bn.recalibrate_batch_norm"}
    _save_model(classifier, os.path.join(run_dir, MODEL_FILE))

    test_metrics = evaluate_test(classifier, config, info, None, True)
    run_info["cvae"]["type1_seconds_per_1000"] = regenerate.type1_seconds_per_1000()
    run_info.update(status="complete", tau=None, epochs_completed=len(history),
                    history=history, test_metrics=test_metrics, pool_size=len(pool))
    write_json(run_file, run_info)
    return RunResult(run_dir, config, history, None, test_metrics)


def train_manifold(config, run_dir, images, labels, num_classes, resume=False, verbose="auto"):
    """Phase 1: (the trained CVAE, its history), from cvae.keras when a resumed run has it."""
    c = config.cvae
    path = os.path.join(run_dir, CVAE_FILE)
    phase_dir = os.path.join(run_dir, CVAE_PHASE_DIR)
    checkpoint = latest_checkpoint(phase_dir) if resume else None
    if resume and os.path.isfile(path):
        cvae = keras.saving.load_model(path, compile=False)
        return cvae, (checkpoint[1].get("history", []) if checkpoint else [])
    cvae = CVAE(images.shape[1:], num_classes, c.latent_dim, c.width, c.hidden_units,
                seed=config.seed)
    cvae.compile(keras.optimizers.Adam(c.learning_rate))
    cvae.optimizer.build(cvae.trainable_variables)
    trackables = {"cvae": cvae, "optimizer": cvae.optimizer}
    initial_epoch, history, _ = resume_from(checkpoint, trackables)

    def checkpoint_state(epoch, logs):
        history.append(dict(_plain(logs), epoch=epoch))
        return {"history": history}

    # Its own batch order (seed + 1): the classifier's epochs use `seed`.
    dataset = epoch_batches(images, labels, config.batch_size, config.seed + 1, initial_epoch,
                            c.vae_epochs)
    fit_callbacks = [
        EpochTimer(),
        RunCheckpoint(phase_dir, trackables, checkpoint_state, None, config.checkpoint_every,
                      c.vae_epochs, config.checkpoint_keep),
        keras.callbacks.CSVLogger(os.path.join(run_dir, "cvae_history.csv"), append=resume),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "logs", "cvae"), write_graph=False),
        keras.callbacks.TerminateOnNaN(),
    ]
    if initial_epoch < c.vae_epochs:
        if verbose:
            print(f"Phase 1/2: CVAE, {c.vae_epochs} epochs (latent_dim={c.latent_dim})")
        cvae.fit(dataset, epochs=c.vae_epochs, initial_epoch=initial_epoch,
                 steps_per_epoch=len(images) // config.batch_size, callbacks=fit_callbacks,
                 verbose=verbose, shuffle=False)
        if verbose:
            print(f"Phase 2/2: (n+1)-class classifier, {config.epochs} epochs")
    _save_model(cvae, path)
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


class AddOutliers(keras.callbacks.Callback):
    """Adds `count` CVAE outliers (half Type I, half Type II) to a TIE garbage pool after
    each epoch (`tie.cvae_per_epoch`); logs `cvae_added`.

    Placed after `InversionExclusion`, so the epoch's inverted samples go in
    first. Draws from (seed, epoch), like the inversion.
    """

    def __init__(self, sampler, pool, count, seed=0):
        super().__init__()
        self.sampler = sampler
        self.pool = pool
        self.count = int(count)
        self.seed = int(seed)

    def on_epoch_end(self, epoch, logs=None):
        rng = np.random.default_rng([self.seed, epoch, 5])
        self.pool.add(self.sampler.mixed(self.count, rng), rng)
        if logs is not None:
            logs["cvae_added"] = self.count
            logs["pool_size"] = len(self.pool)


def tie_pool_callbacks(config, pool, images, labels, dataset_name):
    """The TIE side of `tie.cvae_run`: seeds `pool` with CVAE outliers, returns the callbacks.

    With `tie.cvae_run` set, `tie.initial_pool_size` outliers of that run's
    CVAE (half Type I, half Type II, rounded to 8-bit pixels and clipped to
    [0, 1] like every image of the TIE pool) replace the garbage pool's
    initial Gaussian noise (`tie.cvae_initial = "replace"`) or join it
    (`"add"`); with `tie.cvae_per_epoch` > 0 an
    `AddOutliers` callback is returned. A resumed run's pool is then restored
    from its checkpoint over the seed.

    Raises:
        ConfigError: `tie.cvae_run` is not a finished cvae run of this dataset.
    """
    t = config.tie
    if not t.cvae_run:
        return []
    try:
        sampler = OutlierSampler.from_run(t.cvae_run, images, labels, dataset_name,
                                          beta_range=(config.cvae.beta_min,
                                                      config.cvae.beta_max),
                                          coverage=config.cvae.coverage,
                                          batch_size=config.cvae.jacobian_batch)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(f"tie.cvae_run: {error}") from error
    rng = np.random.default_rng([config.seed, 0, 5])
    outliers = sampler.mixed(t.initial_pool_size, rng)
    if t.cvae_initial == "add":
        pool.add(outliers, rng)
    else:
        pool.set(outliers)
    return [AddOutliers(sampler, pool, t.cvae_per_epoch, config.seed)] if t.cvae_per_epoch \
        else []


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
    files = {"type1": os.path.join("images", "type1.png"),
             "type1_perturbation": os.path.join("images", "type1_perturbation.png"),
             "type2": os.path.join("images", "type2.png")}
    grids = {"type1": np.clip(off, 0, 1), "type1_perturbation": change, "type2": on}
    for key, relative in files.items():
        write_png(os.path.join(run_dir, relative),
                  image_grid(np.asarray(grids[key], np.float32).reshape(shape)))
    return files
