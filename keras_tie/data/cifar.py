"""Reader of the CIFAR "python version" tarballs (cifar-10-python.tar.gz, cifar-100-python.tar.gz).

Each batch is a pickled dict: b"data" uint8 [N, 3072] (1024 red, 1024 green,
1024 blue values per row, row-major 32x32) and b"labels" (CIFAR-10) or
b"fine_labels" (CIFAR-100, used here). https://www.cs.toronto.edu/~kriz/cifar.html
"""

import io
import pickle

import numpy as np

from keras_tie.data import archive
from keras_tie.data.dataset import make_dataset
from keras_tie.data.errors import CorruptDataError, DatasetNotFoundError

CIFAR10_BATCHES = {
    "train": ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"),
    "test": ("test_batch",),
}
CIFAR100_BATCHES = {"train": ("train",), "test": ("test",)}

# The batches hold numpy arrays and plain containers; nothing else may be unpickled,
# so a tampered file cannot run code.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch")
        return super().find_class(module, name)


def read_cifar_python(path, name, class_names, batches):
    """Both splits of a CIFAR python tarball (or its extracted folder): dict split -> `Dataset`.

    Args:
        path: cifar-10-python.tar.gz, cifar-100-python.tar.gz, or the extracted
            cifar-10-batches-py / cifar-100-python folder.
        name: dataset name for the `DatasetInfo`.
        class_names: the class names in label order.
        batches: dict split -> batch file names (`CIFAR10_BATCHES`, `CIFAR100_BATCHES`).
    """
    wanted = {batch for names in batches.values() for batch in names}
    found = {}
    for member, data in archive.iter_files(path, lambda m: m.rsplit("/", 1)[-1] in wanted):
        found[member.rsplit("/", 1)[-1]] = (member, data)
    result = {}
    for split, names in batches.items():
        missing = [batch for batch in names if batch not in found]
        if missing:
            raise DatasetNotFoundError(
                f"{path} lacks the CIFAR batch file(s) {missing}; expected {sorted(wanted)}."
            )
        parts = [_read_batch(path, *found[batch]) for batch in names]
        images = np.concatenate([images for images, _ in parts])
        labels = np.concatenate([labels for _, labels in parts])
        result[split] = make_dataset(
            name, split, images, labels, class_names, str(path), (32, 32, 3)
        )
    return result


def _read_batch(path, member, data):
    where = f"{path}:{member}"
    try:
        batch = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
        rows = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = batch[b"fine_labels"] if b"fine_labels" in batch else batch[b"labels"]
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as error:
        raise CorruptDataError(
            f"{where} is not a CIFAR batch: expected a pickled dict with b'data' and b'labels' "
            f"or b'fine_labels' ({type(error).__name__}: {error})."
        ) from error
    if rows.ndim != 2 or rows.shape[1] != 3072:
        raise CorruptDataError(f"{where}: b'data' must be [N, 3072]. Received: shape={rows.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (rows.shape[0],):
        raise CorruptDataError(
            f"{where}: one label per image expected. Received: {rows.shape[0]} images, "
            f"{labels.size} labels"
        )
    return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels
