"""The run driver: one `train` for every method, into a run folder (keras_tie.run_folder).

`train` settles the config (a new run, or the config saved in run.json when
resuming), checks the folder, then drives the run the same way for every
method: load the training data -> write the run record -> build the method's
models (its `Recipe`, keras_tie.methods) -> restore the newest checkpoint ->
`fit` with the callbacks every run gets (non-finite stop, checkpoints,
history.csv, TensorBoard) -> save the artefacts -> test -> complete the
record.

A method contributes a `Recipe` (keras_tie.methods.<method>.recipe): the
run.json fields it knows before building, and `build`, which returns a `Plan`
(the model `fit` trains, what is checkpointed, its callbacks, its held-out
data) and `finish`, which saves the method's files and measures it on the
test split.
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

import keras_tie
from keras_tie import methods
from keras_tie.config import Config, ConfigError
from keras_tie.run_folder import (
    HISTORY_FILE,
    LOGS_DIR,
    RUN_FILE,
    read_record,
    run_path,
    validation_split_indices,
    write_record,
)
from keras_tie.training import distribute
from keras_tie.training.batches import epoch_batches
from keras_tie.training.callbacks import EpochTimer, HistoryCSV, NonFiniteStop
from keras_tie.training.checkpoint import RunCheckpoint, latest_checkpoint, resume_from
from keras_tie.training.recipe import TrainingData, history_row


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
    run_file = run_path(run_dir, RUN_FILE)
    checkpoint = None
    if resume:
        if not os.path.isfile(run_file):
            raise FileNotFoundError(
                f"Cannot resume: {run_file} does not exist. Start the run without --resume.")
        saved = Config.from_dict(read_record(run_dir)["config"])
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
    data = load_training_data(config)
    recipe = methods.recipe(config.method)(config, data, run_dir, verbose)

    record = read_record(run_dir) if resume else {}
    for stale in ("failure", "test_metrics"):  # measured anew; a failed run resumes too
        record.pop(stale, None)
    record.update(run_record(config, data, **recipe.record()))
    if not resume:  # from here on the folder is a run: a kill in a first phase can be resumed
        write_record(run_dir, record)
    try:
        plan = recipe.build(resume)
    except (ConfigError, ValueError, FileNotFoundError):
        if not resume:  # a new run whose config cannot be built leaves no run behind
            _empty(run_dir)
        raise
    record.update(plan.record)
    write_record(run_dir, record)
    if verbose:
        for note in record.get("notes", ()):
            print(f"Note: {note}")

    initial_epoch, history, state = resume_from(checkpoint, plan.trackables, plan.pool)
    if checkpoint and plan.restore is not None:
        plan.restore(state)

    def checkpoint_state(epoch, logs):
        history.append(dict(history_row(logs), epoch=epoch))
        return {**plan.state(), "history": history}

    fit_callbacks = [*plan.timed, EpochTimer(), *plan.untimed,
                     *run_callbacks(run_dir, plan.trackables, checkpoint_state, config, resume,
                                    callbacks, plan.pool)]
    if initial_epoch < config.epochs:
        dataset = epoch_batches(data.images, data.labels, config.batch_size, config.seed,
                                initial_epoch, config.epochs, config.augment)
        plan.model.fit(dataset, epochs=config.epochs, initial_epoch=initial_epoch,
                       steps_per_epoch=data.steps_per_epoch, callbacks=fit_callbacks,
                       verbose=verbose, shuffle=False, validation_data=plan.validation_data)

    test_metrics, finished = recipe.finish(plan)
    record.update(finished)
    record.update(status="complete", epochs_completed=len(history), history=history,
                  test_metrics=test_metrics)
    write_record(run_dir, record)
    return RunResult(run_dir, config, history, record.get("tau"), test_metrics)


def _empty(run_dir):
    """Removes what a new run wrote into `run_dir` (it was new or empty when the run began)."""
    import shutil

    for name in os.listdir(run_dir):
        path = os.path.join(run_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def run_record(config, data, **fields):
    """The run.json entries every method writes when its training starts, updated by `fields`.

    Defaults for methods without classes of their own to reject: no garbage
    class, the dataset's classes, float pixels in [0, 1] as input.
    """
    info = data.info
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
        "train_images": len(data.images),
        "validation": {"fraction": config.validation_split, "seed": config.seed,
                       "rule": "keras_tie.run_folder.validation_split_indices"},
        "steps_per_epoch": data.steps_per_epoch,
        "distribute": distribute.describe(),
        "status": "running",
    }
    record.update(fields)
    return record


def load_training_data(config):
    """The run's training set, split into training and held-out images.

    Returns:
        A `TrainingData`; its held-out pair is (None, None) without a
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
    return TrainingData(train_set, images, labels, held_images, held_labels,
                        len(images) // config.batch_size)


def run_callbacks(run_dir, trackables, checkpoint_state, config, resume, callbacks=(),
                  pool=None):
    """The callbacks every run folder gets, after the method's own: a stop on a non-finite
    loss that fails the run (`NonFiniteStop`), resumable checkpoints, history.csv, TensorBoard
    logs, then the caller's `callbacks`."""
    guard = NonFiniteStop(run_path(run_dir, RUN_FILE))
    return [
        guard,
        RunCheckpoint(run_dir, trackables, checkpoint_state, pool, config.checkpoint_every,
                      config.epochs, config.checkpoint_keep, guard),
        HistoryCSV(os.path.join(run_dir, HISTORY_FILE), append=resume),
        keras.callbacks.TensorBoard(os.path.join(run_dir, LOGS_DIR), write_graph=False),
        *callbacks,
    ]
