"""Runs a training job end to end: data, models, fit, checkpoints, run folder.

A run folder holds::

    run.json            the resolved config, class names, input shape,
                        normalisation, tau_T, history, test metrics, timings
    model.keras         the trained classifier (keras.saving.load_model)
    generator.keras     the inverting generator (method tie)
    history.csv         one row per epoch (Keras CSVLogger)
    images/             inverted samples per class per epoch (PNG)
    logs/               TensorBoard scalars and images
    checkpoints/        resumable checkpoints (see checkpoint.py)

Methods: `tie` (the paper's Training-Inversion-Exclusion), `static` (n + 1
classes, garbage class of static Gaussian noise: the paper's "No TIE"
ablation), `plain` (the ordinary n-class classifier of the same backbone).
`flow` (a RealNVP with the approximate-mass penalty) is run by
flow_runner.py, into a folder of the same layout.
`repair` (SR-OOD's repair network) is run by repair_runner.py, likewise.
`cvae` (an (n+1)-class classifier whose extra class is CVAE outliers) is
run by cvae_runner.py, into a folder of this layout plus cvae.keras.
"""

import dataclasses
import math
import os

import keras
import numpy as np
import tensorflow as tf

import keras_tie
from keras_tie._io import read_json, write_json
from keras_tie.config import Config, ConfigError
from keras_tie.inference import predict_probabilities, two_level_decision
from keras_tie.models import build_classifier, build_generator, resolve_backbone
from keras_tie.training import distribute
from keras_tie.training.callbacks import EpochTimer, InversionExclusion, NonFiniteStop
from keras_tie.training.checkpoint import RunCheckpoint, latest_checkpoint, resume_from
from keras_tie.training.pool import GarbagePool
from keras_tie.training.tie_model import TIEModel

RUN_FILE = "run.json"
MODEL_FILE = "model.keras"
GENERATOR_FILE = "generator.keras"


@dataclasses.dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: str
    config: Config
    history: list
    tau: float | None
    test_metrics: dict


def train(config, run_dir, resume=False, verbose="auto", callbacks=(), strategy=None):
    """Trains `config` into `run_dir`.

    Args:
        config: a `Config`.
        run_dir: the run folder (created).
        resume: continue from the folder's last checkpoint; the config saved
            in run.json is used, except for `epochs`, which may be raised.
        verbose: passed to `fit` (progress bar by default).
        callbacks: extra Keras callbacks.
        strategy: a `tf.distribute.Strategy` (`distribute.make_strategy`);
            None: the current one. Everything is built inside its scope, and
            `fit` splits each global batch of `batch_size` between its
            replicas. On a non-chief worker of a multi-worker run the run is
            written to a temporary folder, deleted at the end (Keras' and
            TensorFlow's advice: every worker saves, only the chief's files
            are kept).

    Returns:
        A `RunResult`.
    """
    if strategy is not None and tf.distribute.get_strategy() is not strategy:
        with strategy.scope():
            if distribute.is_chief(strategy):
                return train(config, run_dir, resume, verbose, callbacks, strategy)
            return distribute.train_as_worker(train, config, run_dir, resume, callbacks,
                                              strategy)
    run_file = os.path.join(run_dir, RUN_FILE)
    checkpoint = None
    if resume:
        if not os.path.isfile(run_file):
            raise FileNotFoundError(
                f"Cannot resume: {run_file} does not exist. Start the run without --resume.")
        saved = Config.from_dict(read_json(run_file)["config"])
        if config is not None and config.epochs < saved.epochs:
            raise ConfigError(
                f"A resumed run can only be given more epochs: {run_dir} was started for "
                f"{saved.epochs}. Received: epochs={config.epochs}. Pass --epochs "
                f"{saved.epochs} or more, or leave --epochs out.")
        config = saved.replace(epochs=config.epochs) if config is not None else saved
        checkpoint = latest_checkpoint(run_dir)
    elif os.path.isfile(run_file):
        raise FileExistsError(
            f"{run_dir} already holds a run. Pass --resume to continue it, or choose another "
            "--output folder.")
    elif os.path.isdir(run_dir) and os.listdir(run_dir):
        raise FileExistsError(
            f"{run_dir} is not empty and is not a keras-tie run (it has no {RUN_FILE}): "
            f"training would overwrite its files. Received: --output {run_dir}. Choose a new "
            "or empty folder.")
    created = not os.path.isdir(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    try:
        return _train(config, run_dir, resume, verbose, callbacks, checkpoint, run_file)
    except BaseException:
        if created and os.path.isdir(run_dir) and not os.listdir(run_dir):
            os.rmdir(run_dir)  # a start that failed leaves no empty folder behind
        raise


def _train(config, run_dir, resume, verbose, callbacks, checkpoint, run_file):
    keras.utils.set_random_seed(config.seed)
    if config.method == "flow":  # a density model, not a classifier: its own runner
        from keras_tie.training.flow_runner import train_flow

        return train_flow(config, run_dir, resume=resume, verbose=verbose, callbacks=callbacks)
    if config.method == "repair":  # SR-OOD's repair network, not a classifier: its own runner
        from keras_tie.training.repair_runner import train_repair

        return train_repair(config, run_dir, resume=resume, verbose=verbose, callbacks=callbacks)
    if config.method == "cvae":  # CVAE outliers as the extra class: two phases, its own runner
        from keras_tie.training.cvae_runner import train_cvae

        return train_cvae(config, run_dir, resume=resume, verbose=verbose, callbacks=callbacks)

    train_set, images, labels, held_images, held_labels = load_training_data(config)
    info = train_set.info
    validation_data = None if held_images is None else tf.data.Dataset.from_tensor_slices(
        (held_images.astype(np.float32) / 255.0, held_labels)).batch(512)
    num_classes = info.num_classes
    mean, std = train_set.channel_stats()
    mean = mean.astype(np.float32)
    variance = np.maximum(np.square(std), 1e-6).astype(np.float32)  # constant images: no 0-division
    with_garbage = config.method != "plain"
    num_outputs = num_classes + 1 if with_garbage else num_classes

    classifier = build_classifier(info.image_shape, num_outputs, config.model.backbone,
                                  config.model.width, config.model.dense_units, mean, variance,
                                  config.model.bn_momentum, config.model.dropout,
                                  precision=config.model.precision)
    distribute.synchronize_batch_norm(classifier)  # global-batch statistics on several replicas
    steps_per_epoch = len(images) // config.batch_size
    dataset = epoch_batches(images, labels, config.batch_size, config.seed,
                            checkpoint[1]["epoch"] if checkpoint else 0, config.epochs,
                            config.augment)

    run_info = run_record(
        config, info, len(images), steps_per_epoch,
        num_classes=num_classes, num_outputs=num_outputs,
        garbage_index=num_classes if with_garbage else None,
        normalization={"mean": mean.tolist(), "variance": variance.tolist()},
        backbone=resolve_backbone(config.model.backbone, info.image_shape))
    write_json(run_file, run_info)

    tie_callback = None
    pool = None
    if with_garbage:
        tie = config.tie
        pool = GarbagePool(info.image_shape, tie.pool_capacity, tie.pool_retirement,
                           "float16" if tie.initial_noise == "unclipped" else "uint8")
        pool.fill_with_noise(tie.initial_pool_size, mean, np.sqrt(variance),
                             np.random.default_rng([config.seed, 0, 0]))
        cvae_callbacks = []
        if tie.cvae_run:  # CVAE outliers seed (and may top up) the pool: docs/cvae.md
            from keras_tie.training.cvae_runner import tie_pool_callbacks

            cvae_callbacks = tie_pool_callbacks(config, pool, images, labels, info.name)
        generator = None
        if config.method == "tie":
            generator = build_generator(
                info.image_shape, num_outputs, config.model.latent_dim,
                config.model.generator_width, config.model.bn_momentum,
                output_mean=mean if config.model.generator_init == "data_mean" else None)
        garbage_per_batch = tie.garbage_per_batch or max(config.batch_size // num_classes, 1)
        interval = max(steps_per_epoch // max(tie.generator_steps_per_epoch, 1), 1)
        model = TIEModel(classifier, pool, generator, garbage_per_batch, tie.generator_batch_size,
                         interval, tie.alpha, tie.beta, config.seed, tie.diversity,
                         tie.inversion_mode)
        model.compile(classifier_optimizer(config, steps_per_epoch),
                      keras.optimizers.Adam(config.optimizer.generator_lr)
                      if generator is not None else None)
        tie_callback = InversionExclusion(
            model, images, np.bincount(labels, minlength=num_classes), steps_per_epoch,
            tie.threshold_lambda, tie.samples_per_class, tie.gamma_start, tie.gamma_max,
            tie.threshold_samples, config.seed, run_dir, os.path.join(run_dir, "logs"),
            invert=generator is not None, garbage_weight=tie.garbage_weight)
        trackables = {"classifier": classifier, "optimizer": model.optimizer, "rng": model.rng,
                      "class_weights": model.class_weights, "gamma": model.gamma}
        if generator is not None:
            trackables.update(generator=generator, generator_optimizer=model.generator_optimizer)
    else:
        model = classifier
        model.compile(classifier_optimizer(config, steps_per_epoch),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        model.optimizer.build(classifier.trainable_variables)
        trackables = {"classifier": classifier, "optimizer": model.optimizer}

    initial_epoch, history, state = resume_from(checkpoint, trackables, pool)
    if tie_callback is not None and checkpoint:
        tie_callback.tau = state.get("tau")

    def checkpoint_state(epoch, logs):
        history.append(dict(_plain(logs), epoch=epoch))
        return {"tau": tie_callback.tau if tie_callback else None, "history": history}

    # The timer ends after the inversion and exclusion, before the checkpoint.
    fit_callbacks = [EpochTimer()]
    if tie_callback is not None:
        fit_callbacks.insert(0, tie_callback)
        fit_callbacks[1:1] = cvae_callbacks  # after the inversion, before the timer ends
    fit_callbacks += run_callbacks(run_dir, trackables, checkpoint_state, config, resume,
                                   callbacks, pool)
    if initial_epoch < config.epochs:
        model.fit(dataset, epochs=config.epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=steps_per_epoch, callbacks=fit_callbacks, verbose=verbose,
                  shuffle=False, validation_data=validation_data)

    tau = tie_callback.tau if tie_callback is not None else None
    _save_model(classifier, os.path.join(run_dir, MODEL_FILE))
    if with_garbage and config.method == "tie":
        _save_model(model.generator, os.path.join(run_dir, GENERATOR_FILE))

    test_metrics = evaluate_test(classifier, config, info, tau, with_garbage)
    run_info.update(status="complete", tau=tau, epochs_completed=len(history),
                    history=history, test_metrics=test_metrics,
                    pool_size=len(pool) if pool is not None else None)
    write_json(run_file, run_info)
    return RunResult(run_dir, config, history, tau, test_metrics)


def classifier_optimizer(config, steps_per_epoch):
    """The classifier's optimizer (`optimizer.classifier_optimizer`: Adam, Adadelta with
    Keras' rho = 0.95 and epsilon = 1e-7, or SGD with Nesterov momentum 0.9): at
    `optimizer.classifier_lr`, or along its cosine decay to 0 over `epochs * steps_per_epoch`
    updates (`optimizer.classifier_schedule = "cosine"`), after a linear warm-up from 0 over
    `optimizer.warmup_epochs`; with `optimizer.weight_decay` (decoupled, Keras')."""
    o = config.optimizer
    rate = o.classifier_lr
    if o.classifier_schedule == "cosine":
        total = max(config.epochs * steps_per_epoch, 1)
        warmup = min(int(round(o.warmup_epochs * steps_per_epoch)), total - 1)
        if warmup > 0:
            rate = keras.optimizers.schedules.CosineDecay(
                0.0, decay_steps=total - warmup, alpha=0.0, warmup_target=o.classifier_lr,
                warmup_steps=warmup)
        else:
            rate = keras.optimizers.schedules.CosineDecay(o.classifier_lr, decay_steps=total,
                                                          alpha=0.0)
    decay = o.weight_decay or None
    if o.classifier_optimizer == "adadelta":
        return keras.optimizers.Adadelta(rate, weight_decay=decay)
    if o.classifier_optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=0.9, nesterov=True, weight_decay=decay)
    return keras.optimizers.Adam(rate, weight_decay=decay)


def run_record(config, info, train_images, steps_per_epoch, **fields):
    """The run.json entries every method writes when its training starts, updated by `fields`.

    Defaults for methods without classes of their own to reject: no garbage
    class, the dataset's classes, float pixels in [0, 1] as input.
    """
    record = {
        "keras_tie_version": keras_tie.__version__,
        "config": config.to_dict(),
        "method": config.method,
        "dataset": info.name,
        "data_source": info.source,
        "class_names": list(info.class_names),
        "num_classes": info.num_classes,
        "num_outputs": None,
        "garbage_index": None,
        "image_shape": list(info.image_shape),
        "input": "float32 pixels in [0, 1], shape [batch, H, W, C]",
        "train_images": train_images,
        "validation": {"fraction": config.validation_split, "seed": config.seed,
                       "rule": "keras_tie.training.runner.validation_split_indices"},
        "steps_per_epoch": steps_per_epoch,
        "distribute": distribute.describe(),
        "status": "running",
    }
    record.update(fields)
    return record


def load_training_data(config):
    """The run's training set, split into training and held-out images.

    Returns:
        (the loaded `Dataset`, training images, int32 labels, held-out images,
        held-out labels); the held-out pair is (None, None) without a
        `validation_split`.

    Raises:
        ConfigError: fewer training images than one batch.
    """
    from keras_tie.data import load

    train_set = load(config.dataset, split="train", data_dir=config.data_dir or None,
                     limit=config.limit or None)
    images, labels = train_set.images, train_set.labels.astype(np.int32)
    held_images = held_labels = None
    if config.validation_split > 0:
        train_index, val_index = validation_split_indices(len(images), config.validation_split,
                                                          config.seed)
        held_images, held_labels = images[val_index], labels[val_index]
        images, labels = images[train_index], labels[train_index]
    present = len(np.unique(labels))
    if train_set.info.num_classes < 2 or present < 2:
        raise ConfigError(
            f"{config.dataset} has {present} class(es) with training images "
            f"({train_set.info.num_classes} declared): a classifier needs at least two. Give "
            "a dataset with two or more classes (for `folder:PATH`, one sub-folder per class).")
    if len(images) < config.batch_size:
        raise ConfigError(
            f"The training set has {len(images)} images, fewer than one batch. "
            f"Received: batch_size={config.batch_size}. Lower --batch-size.")
    distribute.check_batch_size(config.batch_size)
    return train_set, images, labels, held_images, held_labels


def run_callbacks(run_dir, trackables, checkpoint_state, config, resume, callbacks=(),
                  pool=None):
    """The callbacks every run folder gets, after the method's own: a stop on a non-finite
    loss that fails the run (`NonFiniteStop`), resumable checkpoints, history.csv, TensorBoard
    logs, then the caller's `callbacks`."""
    guard = NonFiniteStop(os.path.join(run_dir, RUN_FILE))
    return [
        guard,
        RunCheckpoint(run_dir, trackables, checkpoint_state, pool, config.checkpoint_every,
                      config.epochs, config.checkpoint_keep, guard),
        HistoryCSV(os.path.join(run_dir, "history.csv"), append=resume),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "logs"), write_graph=False),
        *callbacks,
    ]


class HistoryCSV(keras.callbacks.CSVLogger):
    """Keras' CSVLogger with epochs counted from 1, as in run.json and the checkpoints."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


def validation_split_indices(count, fraction, seed):
    """(train indices, validation indices) of a training set of `count` images.

    The validation images are a uniformly drawn `fraction` of the set, chosen
    from `seed` alone, so evaluation can rebuild the same held-out split from
    run.json. Both index arrays are sorted.
    """
    held_out = int(round(count * fraction))
    order = np.random.default_rng([seed, 7]).permutation(count)
    return np.sort(order[held_out:]), np.sort(order[:held_out])


SHIFT_PIXELS = 2  # `shift` augmentation: up to 2 pixels each way (7% of a 28-pixel side)


def random_shift(images, offsets):
    """Translates each image of [B, H, W, C] by its own whole-pixel offset, black-filled.

    `offsets` [B, 2] int32 in 0..2 * SHIFT_PIXELS: the window's top-left corner
    in the image padded by SHIFT_PIXELS on every side, so SHIFT_PIXELS is no
    shift. Two batched gathers (rows, then columns): no per-image Python loop.
    """
    height, width = images.shape[1], images.shape[2]
    pad = SHIFT_PIXELS
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    rows = offsets[:, :1] + tf.range(height)[None, :]
    columns = offsets[:, 1:] + tf.range(width)[None, :]
    shifted = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(shifted, columns, axis=2, batch_dims=1)


def epoch_batches(images, labels, batch_size, seed, initial_epoch, epochs, augment="none"):
    """A tf.data pipeline of (float pixels in [0, 1], label) batches for epochs
    initial_epoch..epochs-1.

    Each epoch's order is a permutation drawn from (seed, epoch) alone, and
    each batch's augmentation from (seed, epoch, step), so a resumed run sees
    exactly the batches an uninterrupted run would. Images stay uint8 in
    memory; batches are gathered, converted to float and augmented in
    vectorised ops. The last partial batch of each epoch is dropped.

    Args:
        augment: `none`, `flip` (each image mirrored left-right with
            probability 1/2), `shift` (each image translated by dy, dx drawn
            uniformly from -SHIFT_PIXELS..SHIFT_PIXELS, the uncovered border
            black, pixel value 0), or `flip+shift`.
    """
    count = len(images)
    steps = count // batch_size
    images_t = tf.constant(images)
    labels_t = tf.constant(labels)
    seed_t = tf.constant(seed, tf.int64)

    def one_epoch(epoch):
        order = tf.argsort(tf.random.stateless_uniform([count], seed=tf.stack([seed_t, epoch])))
        batches = tf.reshape(order[: steps * batch_size], [steps, batch_size])
        return tf.data.Dataset.from_tensor_slices(
            (tf.fill([steps], epoch), tf.range(steps, dtype=tf.int64), batches))

    augmentations = set(augment.split("+"))

    def gather(epoch, step, index):
        x = tf.cast(tf.gather(images_t, index), tf.float32) / 255.0
        step_key = epoch * 1_000_000 + step
        if "flip" in augmentations:
            flip = tf.random.stateless_uniform(
                [batch_size, 1, 1, 1], seed=tf.stack([seed_t + 1, step_key])) < 0.5
            x = tf.where(flip, tf.reverse(x, axis=[2]), x)
        if "shift" in augmentations:
            offsets = tf.random.stateless_uniform(
                [batch_size, 2], seed=tf.stack([seed_t + 2, step_key]), minval=0,
                maxval=2 * SHIFT_PIXELS + 1, dtype=tf.int32)
            x = random_shift(x, offsets)
        return x, tf.gather(labels_t, index)

    # Multi-worker: every worker builds the same pipeline and keeps its part
    # of each global batch (no files to shard by).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return (tf.data.Dataset.range(initial_epoch, max(epochs, initial_epoch))
            .flat_map(one_epoch)
            .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE)
            .with_options(options))


def evaluate_test(classifier, config, info, tau, with_garbage):
    """Test-split accuracy and, with a garbage class, what the rejection rules cost on ID data."""
    from keras_tie.data import DatasetError, load

    try:
        test_set = load(config.dataset, split="test", data_dir=config.data_dir or None,
                        limit=config.limit or None)
    except DatasetError as error:
        return {"skipped": str(error)}
    probabilities = predict_probabilities(classifier, test_set.images)
    predicted = probabilities.argmax(axis=-1)
    metrics = {"test_images": len(test_set),
               "accuracy": float(np.mean(predicted == test_set.labels))}
    if with_garbage:
        metrics["sent_to_garbage"] = float(np.mean(predicted == info.num_classes))
        if tau is not None:
            decided, _ = two_level_decision(probabilities, tau)
            metrics["rejected_two_level"] = float(np.mean(decided == -1))
            metrics["accuracy_accepted"] = float(
                np.mean(decided[decided >= 0] == test_set.labels[decided >= 0])) \
                if np.any(decided >= 0) else math.nan
    return metrics


def _save_model(model, path):
    """model.save through a temporary name, so a kill never leaves half a .keras file."""
    tmp = f"{path[:-len('.keras')]}.tmp-{os.getpid()}.keras"
    model.save(tmp)
    os.replace(tmp, path)


def _plain(logs):
    return {k: float(v) if np.ndim(v) == 0 else np.asarray(v).tolist() for k, v in logs.items()}

