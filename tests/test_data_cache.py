"""The decode cache: hits, keys that follow the source, atomic writes, damaged entries."""

import gzip
import os
import stat
import struct
import subprocess
import sys

import numpy as np
import pytest

from keras_tie.data import CorruptDataError, cache, load


def write_mnist(folder, labels, split="test"):
    """A tiny MNIST-format split: one 28x28 image per label, pixel (0, 0) = its index."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = {"train": "train", "test": "t10k"}[split]
    images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
    images[:, 0, 0] = np.arange(len(labels))
    for kind, array in (("images-idx3", images), ("labels-idx1", np.asarray(labels, dtype=np.uint8))):
        header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        (folder / f"{stem}-{kind}-ubyte.gz").write_bytes(gzip.compress(header + array.tobytes()))


def cache_files(cache_dir):
    return sorted(p.name for p in cache_dir.iterdir()) if cache_dir.exists() else []


def test_second_load_reads_the_cache(tmp_path, monkeypatch):
    write_mnist(tmp_path / "data" / "mnist", [3, 1, 4])
    first = load("mnist", split="test", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    assert len(cache_files(tmp_path / "cache")) == 1
    monkeypatch.setattr("keras_tie.data.idx.read_idx", lambda path: pytest.fail("read the IDX file again"))
    second = load("mnist", split="test", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(second.labels, [3, 1, 4])
    np.testing.assert_array_equal(second.images, first.images)
    assert second.info == first.info


def test_cache_dir_comes_from_the_environment(tmp_path, monkeypatch):
    write_mnist(tmp_path / "data" / "mnist", [1])
    monkeypatch.setenv("KERAS_TIE_CACHE_DIR", str(tmp_path / "env_cache"))
    load("mnist", split="test", data_dir=tmp_path / "data")
    assert len(cache_files(tmp_path / "env_cache")) == 1


def test_changed_source_file_gives_a_new_entry(tmp_path):
    folder = tmp_path / "data" / "mnist"
    write_mnist(folder, [3, 1, 4])
    load("mnist", split="test", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    old_entries = cache_files(tmp_path / "cache")
    write_mnist(folder, [2, 7, 1, 8])
    stat = os.stat(folder / "t10k-labels-idx1-ubyte.gz")
    os.utime(folder / "t10k-labels-idx1-ubyte.gz", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = load("mnist", split="test", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.labels, [2, 7, 1, 8])
    new_entries = cache_files(tmp_path / "cache")
    assert len(new_entries) == 1 and new_entries != old_entries  # the stale entry is gone


def test_failed_load_leaves_nothing_in_the_cache(tmp_path):
    folder = tmp_path / "data" / "mnist"
    write_mnist(folder, [3, 1, 4])
    data = (folder / "t10k-images-idx3-ubyte.gz").read_bytes()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(data[:-12])
    with pytest.raises(CorruptDataError, match="t10k-images-idx3-ubyte.gz"):
        load("mnist", split="test", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    assert cache_files(tmp_path / "cache") == []


def test_write_interrupted_midway_leaves_no_entry_and_no_temp_file(tmp_path, monkeypatch):
    write_mnist(tmp_path / "data" / "mnist", [3, 1, 4])

    def savez_then_die(file, **arrays):
        file.write(b"PK\x03\x04 half of an entry")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", savez_then_die)
    with pytest.warns(UserWarning, match="Cannot write the cache entry"):
        ds = load("mnist", split="test", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(ds.labels, [3, 1, 4])
    assert cache_files(tmp_path / "cache") == []


def test_temp_file_of_a_killed_process_is_ignored_then_removed(tmp_path):
    write_mnist(tmp_path / "data" / "mnist", [3, 1, 4])
    kwargs = dict(split="test", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    load("mnist", **kwargs)
    (entry,) = cache_files(tmp_path / "cache")
    os.remove(tmp_path / "cache" / entry)
    # What a process killed while writing leaves behind: a partial temp file named with its pid.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tmp_path / "cache" / f".{entry}.abc123.{dead.pid}.tmp"
    orphan.write_bytes(b"PK\x03\x04 partial")
    ds = load("mnist", **kwargs)
    np.testing.assert_array_equal(ds.labels, [3, 1, 4])
    assert cache_files(tmp_path / "cache") == [entry]


@pytest.mark.parametrize("damage", ["garbage", "truncate", "flip_a_byte"])
def test_damaged_entry_is_rebuilt(tmp_path, damage):
    write_mnist(tmp_path / "data" / "mnist", [3, 1, 4])
    kwargs = dict(split="test", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    load("mnist", **kwargs)
    (entry,) = (tmp_path / "cache").iterdir()
    data = bytearray(entry.read_bytes())
    if damage == "garbage":
        data = b"not a zip file"
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        # A byte inside the images array: only the zip CRC can notice it.
        data[data.index(b"\x93NUMPY") + 200] ^= 0xFF
    entry.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="Damaged cache entry"):
        ds = load("mnist", **kwargs)
    np.testing.assert_array_equal(ds.labels, [3, 1, 4])
    np.testing.assert_array_equal(ds.images[:, 0, 0, 0], [0, 1, 2])
    assert cache.read(str(entry), "mnist", "test") is not None  # rebuilt and valid


def test_unwritable_cache_only_warns(tmp_path):
    write_mnist(tmp_path / "data" / "mnist", [5])
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.warns(UserWarning, match="Cannot write the cache entry"):
        ds = load("mnist", split="test", data_dir=tmp_path / "data", cache_dir=not_a_dir)
    assert ds.labels.tolist() == [5]


def test_atomic_writes_get_the_permissions_of_an_ordinary_file(tmp_path):
    from keras_tie._io import atomic_write_bytes, write_json

    umask = os.umask(0o022)
    os.umask(umask)
    atomic_write_bytes(str(tmp_path / "a.bin"), b"x")
    write_json(str(tmp_path / "run.json"), {"a": 1})
    for name in ("a.bin", "run.json"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask
    assert sorted(os.listdir(tmp_path)) == ["a.bin", "run.json"]  # no temporary file left
    write_mnist(tmp_path / "data" / "mnist", [1])  # the decode cache writes the same way
    load("mnist", split="test", data_dir=tmp_path / "data", cache_dir=tmp_path / "cache")
    entry, = (tmp_path / "cache").iterdir()
    assert stat.S_IMODE(os.stat(entry).st_mode) == 0o666 & ~umask
