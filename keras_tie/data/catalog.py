"""`list_datasets`: which datasets can be loaded here, from where, or why not.

It checks file names only (no decoding) and asks the network at most once, so
it answers in well under a second offline (plus up to ~2 s for the probe), and
never imports TensorFlow or tensorflow-datasets.
"""

import dataclasses
import importlib.util

from keras_tie.data import local, registry, tfds_source


@dataclasses.dataclass(frozen=True)
class DatasetRecord:
    """One line of `list_datasets`.

    Attributes:
        name: the name to pass to `load`.
        kind: `"real"`, `"synthetic"`, `"embedded"` or `"user"`.
        available: whether `load` can find it here.
        where: where `load` would read it from.
        reason: why it is not available (empty when it is).
    """

    name: str
    kind: str
    available: bool
    where: str
    reason: str


def list_datasets(data_dir=None):
    """A `DatasetRecord` for every known dataset name, then the two user templates."""
    data_dir = local.resolve_data_dir(data_dir)
    return [_record(spec, data_dir) for spec in registry.all_specs()]


def _record(spec, data_dir):
    if spec.kind == registry.SYNTHETIC:
        where = "generated (load with like=<reference>)"
        return DatasetRecord(spec.name, spec.kind, True, where, "")
    if spec.kind == registry.USER:
        return DatasetRecord(spec.name, spec.kind, True, f"the PATH you give: {spec.summary}", "")
    if spec.kind == registry.EMBEDDED:
        if importlib.util.find_spec("sklearn") is None:
            return DatasetRecord(spec.name, spec.kind, False, "", "scikit-learn is not installed")
        return DatasetRecord(spec.name, spec.kind, True, "scikit-learn load_digits (embedded)", "")
    lookups = {split: local.locate(spec, split, data_dir) for split in registry.SPLITS}
    found = {split: lk.source.where for split, lk in lookups.items() if lk.source is not None}
    if found:
        places = sorted(set(found.values()))
        where = " + ".join(places)
        if len(found) < len(registry.SPLITS):
            where += f" ({', '.join(found)} split only)"
        return DatasetRecord(spec.name, spec.kind, True, where, "")
    available, where, tfds_reason = tfds_source.availability(spec)
    if available:
        return DatasetRecord(spec.name, spec.kind, True, where, "")
    if data_dir is None:
        local_reason = f"no local data directory (set {local.DATA_DIR_ENV})"
    else:
        local_reason = f"no {local.expected_files(spec)} in {data_dir}/{spec.name}/"
    return DatasetRecord(spec.name, spec.kind, False, "", f"{local_reason}; {tfds_reason}")
