"""What a method's recipe gets from the run driver (`TrainingData`) and gives back (`Plan`).

A method's `Recipe` (keras_tie.methods.<method>.recipe) is a class built as
`Recipe(config, data, run_dir, verbose)` with three methods:

- `record()`: the run.json fields it knows before building anything;
- `build(resume)`: builds (and, for a two-phase method, pre-trains) its
  models and returns a `Plan`;
- `finish(plan)`: after `fit`, saves its files and returns (test metrics,
  run.json fields to add).

`keras_tie.training.runner` does the rest, the same way for every method.
"""

import dataclasses

import keras
import numpy as np


class BaseRecipe:
    """What every recipe keeps: the run's `config`, its `TrainingData`, the run folder and the
    verbosity `fit` uses. A method's `Recipe` subclasses it and adds `record`, `build` and
    `finish` (the module docstring)."""

    def __init__(self, config, data, run_dir, verbose="auto"):
        self.config = config
        self.data = data
        self.run_dir = run_dir
        self.verbose = verbose

    def record(self):
        """run.json fields known before anything is built; none by default."""
        return {}


@dataclasses.dataclass
class TrainingData:
    """The training split of a run, as `load_training_data` returns it.

    Args:
        dataset: the loaded training `Dataset` (its `info` names the classes).
        images, labels: the images trained on (uint8) and their int32 labels.
        held_images, held_labels: the held-out validation images, or None.
        steps_per_epoch: full batches of `config.batch_size` per epoch.
    """

    dataset: object
    images: np.ndarray
    labels: np.ndarray
    held_images: np.ndarray | None
    held_labels: np.ndarray | None
    steps_per_epoch: int

    @property
    def info(self):
        return self.dataset.info

    def normalization(self):
        """(mean, variance) per channel of the training pixels, float32; the variance is at
        least 1e-6, so a constant image never divides by 0."""
        mean, std = self.dataset.channel_stats()
        return (mean.astype(np.float32),
                np.maximum(np.square(std), 1e-6).astype(np.float32))


@dataclasses.dataclass
class Plan:
    """What a method's `Recipe.build` hands the driver.

    Args:
        model: the model `fit` trains.
        trackables: name -> trackable, checkpointed every epoch.
        record: run.json fields known once the models are built.
        timed: the method's callbacks placed before the epoch timer (their
            epoch-end work counts in `epoch_seconds`, e.g. TIE's inversion).
        untimed: the method's callbacks placed after it.
        validation_data: a dataset of the held-out images for `fit`, or None.
        pool: a pool checkpointed with the trackables (TIE's garbage pool).
        state: callable() -> JSON-able dict saved with each checkpoint.
        restore: callable(state dict) called with a resumed checkpoint's state.
    """

    model: keras.Model
    trackables: dict
    record: dict = dataclasses.field(default_factory=dict)
    timed: list = dataclasses.field(default_factory=list)
    untimed: list = dataclasses.field(default_factory=list)
    validation_data: object = None
    pool: object = None
    state: object = dict
    restore: object = None


def history_row(logs):
    """An epoch's Keras logs as plain JSON numbers (and lists), for run.json's history."""
    return {k: float(v) if np.ndim(v) == 0 else np.asarray(v).tolist() for k, v in logs.items()}
