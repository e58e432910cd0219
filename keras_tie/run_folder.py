"""The run folder `keras-tie train` writes, and the one place that reads it back.

A run folder holds::

    run.json            the run record (`RunRecord`): resolved config, dataset,
                        class names, input shape, normalisation, tau_T,
                        history, test metrics, timings, status
    model.keras         the trained model: a classifier (methods tie, static,
                        plain, cvae), a RealNVP (flow) or a RepairModel (repair)
    generator.keras     the inverting generator (method tie)
    cvae.keras          the CVAE (method cvae)
    history.csv         one row per epoch, epochs counted from 1
    images/             figures of the run (inverted samples, outliers, repairs)
    logs/               TensorBoard scalars and images
    checkpoints/        resumable checkpoints (keras_tie.training.checkpoint)

Training, evaluation, export, predict, the CVAE sampler and the repair
method's perception network all go through this module: the file names, the
record's keys, the checks that a folder is a finished run, the atomic model
save and the held-out validation split are defined here once. Readers raise
`RunFolderError` (a `ValueError`); `keras-tie evaluate` and `keras-tie
export` re-raise it as their own error type with the same message.
"""

import os
from typing import TypedDict

import numpy as np

from keras_tie._io import read_json, write_json

RUN_FILE = "run.json"
MODEL_FILE = "model.keras"
GENERATOR_FILE = "generator.keras"
CVAE_FILE = "cvae.keras"
HISTORY_FILE = "history.csv"
IMAGES_DIR = "images"
LOGS_DIR = "logs"
CHECKPOINTS_DIR = "checkpoints"

# What a classifier record must hold to be evaluated or exported.
CLASSIFIER_KEYS = ("dataset", "num_classes", "image_shape")


class RunRecord(TypedDict, total=False):
    """The keys of run.json. Every method writes the first group when its training starts
    (`keras_tie.training.runner.run_record`) and the second when it ends; a method adds
    its own (`flow`, `repair`, `cvae`, `notes`, `score`, `batch_norm`, `figure`).

    Old run folders may lack keys added later (`validation`, `precision`): readers use
    `.get` with the historical default.
    """

    keras_tie_version: str
    config: dict               # `Config.to_dict()`, the whole resolved config
    method: str                # tie, static, plain, flow, repair, cvae
    dataset: str
    data_source: str
    class_names: list
    num_classes: int
    num_outputs: int | None    # n + 1 with a garbage class, n without; None: not a classifier
    garbage_index: int | None  # the garbage class's output index, None without one
    image_shape: list          # [H, W, C]
    input: str                 # what the model takes, in words
    train_images: int
    validation: dict           # {"fraction", "seed", "rule"}: the held-out split
    steps_per_epoch: int
    distribute: dict           # {"strategy", "replicas", "workers"}
    normalization: dict        # {"mean", "variance"} per channel (classifiers)
    backbone: str
    status: str                # running, complete, failed
    failure: str               # why a failed run stopped
    tau: float | None          # tau_T, the last epoch's exclusion threshold (tie, static)
    epochs_completed: int
    history: list              # one dict of logs per epoch
    test_metrics: dict
    pool_size: int | None


class RunFolderError(ValueError):
    """A folder that is not a usable run, with what to pass instead."""


def run_path(run_dir, name=RUN_FILE):
    """The path of `name` (one of this module's file names) in `run_dir`."""
    return os.path.join(run_dir, name)


def is_run(run_dir):
    """Whether `run_dir` holds a run record (a started run, finished or not)."""
    return os.path.isfile(run_path(run_dir))


def read_record(run_dir, required=()):
    """`run_dir`'s run.json.

    Raises:
        RunFolderError: no such folder, no run.json, an unreadable one, or one
            without a key of `required`.
    """
    run_file = run_path(run_dir)
    if not os.path.isdir(run_dir):
        raise RunFolderError(f"Run folder not found. Received: {run_dir!r}. Pass a folder "
                             f"written by `keras-tie train` (it holds {RUN_FILE} and "
                             f"{MODEL_FILE}).")
    if not os.path.isfile(run_file):
        raise RunFolderError(f"{run_dir!r} has no {RUN_FILE}: it is not a keras-tie run "
                             "folder. Pass a folder written by `keras-tie train`.")
    try:
        record = read_json(run_file)
    except (OSError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        raise RunFolderError(f"Cannot read {run_file}: {error}") from error
    missing = [key for key in required if key not in record]
    if missing:
        raise RunFolderError(f"{run_file} lacks {', '.join(missing)}; was it written by "
                             "`keras-tie train`?")
    return record


def write_record(run_dir, record):
    """Writes `record` as `run_dir`'s run.json, atomically."""
    write_json(run_path(run_dir), record)


def check_finished(run_dir, record, action):
    """Raises RunFolderError unless `run_dir` is a run that finished (`action`: what the
    caller would do with it, e.g. "evaluated")."""
    if record.get("status") == "failed":
        raise RunFolderError(f"{run_dir!r} is a failed run, which is not {action}: "
                             f"{record.get('failure', 'its training did not complete')}")
    if not os.path.isfile(run_path(run_dir, MODEL_FILE)):
        raise RunFolderError(
            f"{run_dir!r} has no {MODEL_FILE} (run status: {record.get('status', 'unknown')!r}). "
            "The model is written when training ends: finish the run with "
            f"`keras-tie train --output {run_dir} --resume`.")


def load_run(run_dir, action="evaluated", required=CLASSIFIER_KEYS, record=None):
    """(run record, model) of a finished run.

    The model is loaded without its training configuration (`compile=False`).
    A classifier's output count is checked against the record's `num_outputs`.
    `record`: the run's record when the caller has read it already.

    Raises:
        RunFolderError: not a finished, readable run (see `read_record`,
            `check_finished`, `load_model`).
    """
    record = read_record(run_dir, required) if record is None else record
    check_finished(run_dir, record, action)
    model_file = run_path(run_dir, MODEL_FILE)
    model = load_model(model_file)
    if record.get("method") not in ("flow", "repair"):  # classifiers: logits to check
        outputs = int(model.outputs[0].shape[-1])
        expected = int(record.get("num_outputs") or record["num_classes"])
        if outputs != expected:
            raise RunFolderError(f"{model_file} has {outputs} outputs but {RUN_FILE} says "
                                 f"num_outputs={expected}.")
    return record, model


# keras-tie's serializable Keras classes: registered name -> (module, class name).
SERIALIZABLE = {
    "keras_tie>CVAE": ("keras_tie.methods.cvae.model", "CVAE"),
    "keras_tie>CouplingNet": ("keras_tie.methods.flow.coupling_net", "CouplingNet"),
    "keras_tie>RealNVP": ("keras_tie.methods.flow.realnvp", "RealNVP"),
    "keras_tie>RepairModel": ("keras_tie.methods.repair.model", "RepairModel"),
    "keras_tie>PerceptualDistance": ("keras_tie.methods.repair.perceptual",
                                     "PerceptualDistance"),
    "keras_tie>LogCondition": ("keras_tie.models.generator", "LogCondition"),
}


def custom_objects(path):
    """The keras-tie classes the .keras file at `path` names, by registered name.

    Read from the archive's config.json and passed to `keras.saving.load_model`
    explicitly, so loading never depends on which keras-tie modules happen to
    be imported, and a classifier's file does not import the flow's
    tensorflow-probability.
    """
    import importlib
    import re
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            config = archive.read("config.json").decode("utf-8")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise _unreadable(path, error) from error
    names = set(re.findall(r'"registered_name": "(keras_tie>[A-Za-z0-9_]+)"', config))
    return {name: getattr(importlib.import_module(SERIALIZABLE[name][0]), SERIALIZABLE[name][1])
            for name in sorted(names) if name in SERIALIZABLE}


def load_model(path):
    """The Keras model saved at `path` (compile=False), keras-tie's classes known.

    Raises:
        RunFolderError: the file cannot be read as a .keras archive.
        ImportError: a class it needs cannot be imported (the flow's
            tensorflow-probability missing), said as Python says it.
    """
    import keras

    import keras_tie  # noqa: F401  (the TensorFlow backend check, before Keras loads a model)

    classes = custom_objects(path)  # an import error (no tensorflow-probability) is raised
    try:
        return keras.saving.load_model(path, custom_objects=classes, compile=False)
    except Exception as error:  # Keras raises many types for a damaged file
        raise _unreadable(path, error) from error


def _unreadable(path, error):
    return RunFolderError(f"Cannot load {path}: it is not a readable .keras archive (damaged "
                          f"or truncated?): {error}")


def save_model(model, path):
    """`model.save` through a temporary name, so a kill never leaves half a .keras file."""
    tmp = f"{path[:-len('.keras')]}.tmp-{os.getpid()}.keras"
    model.save(tmp)
    os.replace(tmp, path)


def validation_split_indices(count, fraction, seed):
    """(train indices, validation indices) of a training set of `count` images.

    The validation images are a uniformly drawn `fraction` of the set, chosen
    from `seed` alone, so evaluation and export rebuild the same held-out
    split from run.json. Both index arrays are sorted.
    """
    held_out = int(round(count * fraction))
    order = np.random.default_rng([seed, 7]).permutation(count)
    return np.sort(order[held_out:]), np.sort(order[:held_out])
