"""Atomic file writes: a killed process leaves the old file or the new one, never half of one."""

import json
import os
import tempfile

# The process's umask, read once (os.umask can only be read by setting it): files written
# here get the mode an ordinary open() would give them, not mkstemp's private 0600, so a run
# folder or an export can be read by the teammate or the TF Serving container that needs it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # for every file written through a private temporary file


def atomic_write_bytes(path, data):
    """Writes `data` to `path` through a temporary file in the same folder and os.replace.

    The file gets the permissions `open(path, "w")` would give it (0666 less the umask).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path, value):
    """Writes `value` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(value, indent=2, sort_keys=True, default=_plain) + "\n")
                       .encode("utf-8"))


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _plain(value):
    """numpy scalars and arrays to plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
