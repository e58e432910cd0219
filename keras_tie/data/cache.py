"""On-disk cache of decoded splits, so 60,000 PNGs are decoded once, not at every load.

One uncompressed .npz per (dataset, split): uint8 images NHWC, int64 labels,
class names, source and skipped files, all stored without pickle. Its name
carries a key made from the source files' paths, sizes and modification times,
so changing a source file makes a new entry (older entries of the same dataset
and split are then removed).

Writes are atomic: a temporary file in the cache folder is written, fsynced and
renamed over the final name with `os.replace`, so a killed process leaves at
most a temporary file (removed by a later write once its process is gone),
never a half-written entry. A damaged entry (zip CRC or shape checks fail) is
deleted and rebuilt.
"""

import hashlib
import json
import os
import re
import tempfile
import warnings
import zipfile
import zlib

import numpy as np

from keras_tie._io import FILE_MODE
from keras_tie.data.dataset import Dataset, DatasetInfo

CACHE_DIR_ENV = "KERAS_TIE_CACHE_DIR"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "keras_tie")
# Bump when the stored arrays would differ for the same source files (a reader or a
# constant such as registry.DTD_IMAGE_SIZE changed).
FORMAT_VERSION = 1

_FIELDS = ("images", "labels", "class_names", "source", "skipped", "key")
# What np.load and the checks raise on a damaged entry.
_DAMAGE = (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile, zlib.error)


def resolve_cache_dir(cache_dir=None):
    """`cache_dir`, else $KERAS_TIE_CACHE_DIR, else ~/.cache/keras_tie (expanded, absolute)."""
    chosen = cache_dir or os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
    return os.path.abspath(os.path.expanduser(str(chosen)))


def fingerprint(paths):
    """(path, size, mtime_ns) of every file in `paths`, walking folders; a source's identity."""
    entries = []
    for path in paths:
        path = os.path.abspath(path)
        if os.path.isdir(path):
            for directory, subdirs, files in os.walk(path):
                subdirs.sort()
                for filename in sorted(files):
                    entries.append(_stat(os.path.join(directory, filename)))
        else:
            entries.append(_stat(path))
    return entries


def _stat(path):
    stat = os.stat(path)
    return (path, stat.st_size, stat.st_mtime_ns)


def entry_path(cache_dir, name, split, files):
    """Where the cache entry of `name`/`split` read from `files` lives."""
    key_data = json.dumps(
        {"version": FORMAT_VERSION, "name": name, "split": split, "files": fingerprint(files)},
        sort_keys=True,
    )
    key = hashlib.sha256(key_data.encode()).hexdigest()[:24]
    return os.path.join(cache_dir, f"{_stem(name, split)}-{key}.npz")


def _stem(name, split):
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.")[:48]
    identity = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{slug}-{identity}-{split}"


def read(path, name, split):
    """The cached `Dataset` at `path`, or `None` when absent or damaged (then deleted)."""
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            fields = {field: stored[field] for field in _FIELDS}
        images, labels = fields["images"], fields["labels"]
        class_names = tuple(str(c) for c in fields["class_names"])
        if str(fields["key"]) != os.path.basename(path):
            raise ValueError("the entry was written under another name")
        if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (images.shape[0],):
            raise ValueError(f"arrays of shape {images.shape} and {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError("labels outside the classes")
        info = DatasetInfo(
            name, split, class_names, images.shape[1:], len(class_names), str(fields["source"])
        )
        skipped = [str(s) for s in fields["skipped"]]
        return Dataset(images, labels.astype(np.int64), info, skipped=skipped)
    except _DAMAGE as error:
        warnings.warn(f"Damaged cache entry {path} ({error}); rebuilding it.", stacklevel=3)
        _remove(path)
        return None


def write(path, dataset):
    """Stores `dataset` at `path` atomically; a cache that cannot be written only warns."""
    directory, final_name = os.path.split(path)
    temp = None
    try:
        os.makedirs(directory, exist_ok=True)
        _remove_orphans(directory, final_name)
        fd, temp = tempfile.mkstemp(
            dir=directory, prefix=f".{final_name}.", suffix=f".{os.getpid()}.tmp"
        )
        os.fchmod(fd, FILE_MODE)  # mkstemp makes it private; a cache entry holds public data
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                images=np.ascontiguousarray(dataset.images, dtype=np.uint8),
                labels=dataset.labels.astype(np.int64),
                class_names=np.array(dataset.info.class_names, dtype=str),
                source=np.array(dataset.info.source),
                skipped=np.array(dataset.skipped, dtype=str),
                key=np.array(final_name),
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
        temp = None
        _fsync_dir(directory)
        _remove_stale(directory, final_name)
    except OSError as error:
        warnings.warn(
            f"Cannot write the cache entry {path} ({error}); loads will decode again.",
            stacklevel=3,
        )
    finally:
        if temp is not None:
            _remove(temp)


def _remove_stale(directory, final_name):
    """Removes entries of the same dataset and split made from older source files."""
    stem = final_name.rsplit("-", 1)[0]
    for other in os.listdir(directory):
        if other != final_name and other.startswith(stem + "-") and other.endswith(".npz"):
            _remove(os.path.join(directory, other))


def _remove_orphans(directory, final_name):
    """Removes temporary files left by processes that were killed while writing this entry."""
    prefix = f".{final_name}."
    for other in os.listdir(directory):
        if not (other.startswith(prefix) and other.endswith(".tmp")):
            continue
        pid = other[: -len(".tmp")].rsplit(".", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            _remove(os.path.join(directory, other))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(directory):
    # Makes the rename itself durable; not every platform can open a folder.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass
