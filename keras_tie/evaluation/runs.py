"""A training run folder, read back for evaluation: run.json plus model.keras.

The model is a classifier (methods tie, static, plain) or a flow (method
flow: a `RealNVP`, pixels in [0, 1] -> log p(x), with no logits), or a
repair model (method repair: a `RepairModel`, scored by `repair`).
"""

import dataclasses
import os

from keras_tie import run_folder


class EvaluationError(ValueError):
    """An evaluation that cannot run as asked: a bad run folder, score or set name."""


@dataclasses.dataclass
class Run:
    """One trained classifier or flow and what its run.json says about it.

    Args:
        path: the run folder.
        label: its name in reports (the folder name, made unique).
        info: the parsed run.json.
        model: the loaded classifier (float pixels in [0, 1] -> logits) or
            flow (float pixels in [0, 1] -> log p(x)).
    """

    path: str
    label: str
    info: dict
    model: object

    @property
    def method(self):
        return self.info.get("method", "unknown")

    @property
    def dataset(self):
        return self.info["dataset"]

    @property
    def image_shape(self):
        return tuple(int(d) for d in self.info["image_shape"])

    @property
    def num_classes(self):
        return int(self.info["num_classes"])

    @property
    def is_flow(self):
        """A density model (method flow), scored by its likelihood, not its logits."""
        return self.method == "flow"

    @property
    def is_repair(self):
        """An SR-OOD repair model (method repair), scored by its repair distance."""
        return self.method == "repair"

    @property
    def num_outputs(self):
        """The classifier's outputs (n or n + 1); None for a flow or a repair model."""
        return None if self.is_flow or self.is_repair else int(self.model.outputs[0].shape[-1])

    @property
    def garbage_index(self):
        index = self.info.get("garbage_index")
        return None if index is None else int(index)

    @property
    def tau(self):
        return self.info.get("tau")

    @property
    def config(self):
        return self.info.get("config", {})

    @property
    def validation(self):
        """(fraction, seed) of the held-out training split; (0, seed) for runs without one.

        Runs written before the validation split existed have no "validation" key.
        """
        validation = self.info.get("validation") or {}
        return (float(validation.get("fraction", 0.0) or 0.0),
                int(validation.get("seed", self.config.get("seed", 0))))


def load_run(run_dir, label=None):
    """Reads `run_dir`'s run.json and loads its model.keras (keras_tie.run_folder.load_run).

    Raises:
        EvaluationError: the folder, run.json or model.keras is missing or
            unreadable, run.json lacks a key the evaluation needs, or the run failed.
    """
    try:
        info, model = run_folder.load_run(run_dir, "evaluated", run_folder.CLASSIFIER_KEYS)
    except run_folder.RunFolderError as error:
        raise EvaluationError(str(error)) from error
    label = label or os.path.basename(os.path.normpath(run_dir)) or run_dir
    return Run(run_dir, label, info, model)


def load_runs(run_dirs):
    """Loads every run; labels are the folder names, suffixed -2, -3 ... when they repeat.

    Raises:
        EvaluationError: no runs, or runs on different in-distribution datasets.
    """
    if not run_dirs:
        raise EvaluationError("No run folders given. Pass at least one RUN_DIR.")
    runs, seen = [], {}
    for run_dir in run_dirs:
        name = os.path.basename(os.path.normpath(run_dir)) or str(run_dir)
        seen[name] = seen.get(name, 0) + 1
        runs.append(load_run(str(run_dir), name if seen[name] == 1 else f"{name}-{seen[name]}"))
    identities = {(run.dataset, run.image_shape) for run in runs}
    if len(identities) > 1:
        listing = ", ".join(f"{run.path} ({run.dataset}, {run.image_shape})" for run in runs)
        raise EvaluationError(
            "Runs compared side by side must share their in-distribution dataset and input "
            f"shape. Received: {listing}. Evaluate each dataset's runs separately.")
    return runs
