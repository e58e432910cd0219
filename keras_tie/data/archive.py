"""Reads the files of a folder tree, or of a .tar/.tar.gz/.zip of one, without extracting.

Tar archives are read as a stream in a single pass (no seeking back), which is
the fast way through a .tar.gz; zip archives are read member by member. Member
paths are returned relative, with '/' separators, in archive order (sorted for
plain folders): callers that need an order sort them.
"""

import bz2
import gzip
import io
import lzma
import os
import tarfile
import zipfile
import zlib

from keras_tie.data.errors import CorruptDataError, DatasetNotFoundError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ZIP_SUFFIXES = (".zip",)
ARCHIVE_SUFFIXES = TAR_SUFFIXES + ZIP_SUFFIXES

# Files that archivers and file browsers add and that are never data.
_JUNK_PARTS = ("__MACOSX",)
_JUNK_NAMES = (".DS_Store", "Thumbs.db")


def is_archive(path):
    """Whether `path` names a tar or zip archive, by its suffix."""
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def iter_files(path, wanted):
    """Yields `(relative_path, bytes)` for every regular file under `path` that `wanted` accepts.

    Args:
        path: a folder, or a tar (optionally gz/bz2/xz compressed) or zip archive.
        wanted: `callable(relative_path) -> bool`, called before a member is read,
            so unwanted members cost no memory.

    Raises `DatasetNotFoundError` when `path` does not exist and `CorruptDataError`
    naming the archive when it is truncated or damaged (which a stream may only
    reveal near its end, after earlier members were yielded).
    """
    if not os.path.exists(path):
        raise DatasetNotFoundError(f"Not found: {path}")
    if os.path.isdir(path):
        yield from _iter_folder(path, wanted)
    elif str(path).lower().endswith(ZIP_SUFFIXES):
        yield from _iter_zip(path, wanted)
    elif str(path).lower().endswith(TAR_SUFFIXES):
        yield from _iter_tar(path, wanted)
    else:
        raise DatasetNotFoundError(
            f"{path} is neither a folder nor an archive with a suffix in {list(ARCHIVE_SUFFIXES)}."
        )


def _is_junk(relative_path):
    parts = relative_path.split("/")
    return (
        any(part in _JUNK_PARTS for part in parts)
        or parts[-1] in _JUNK_NAMES
        or parts[-1].startswith("._")
    )


def _normalise(name):
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _iter_folder(root, wanted):
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        for filename in sorted(files):
            full = os.path.join(directory, filename)
            relative = os.path.relpath(full, root).replace(os.sep, "/")
            if _is_junk(relative) or not os.path.isfile(full) or not wanted(relative):
                continue
            try:
                with open(full, "rb") as f:
                    yield relative, f.read()
            except OSError as error:
                raise CorruptDataError(f"Cannot read {full}: {error}") from error


def _iter_tar(path, wanted):
    try:
        with open(path, "rb") as raw:
            stream = _CountingReader(_decompressed(raw))
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    name = _normalise(member.name)
                    if not member.isfile() or _is_junk(name) or not wanted(name):
                        continue
                    yield name, archive.extractfile(member).read()
                end = archive.offset
            # tarfile takes a stream that stops between two members for the end of the
            # archive; a complete one carries an end-of-archive block, and a complete
            # compressed stream an end marker (checked while draining).
            stream.drain()
            if stream.count < end + tarfile.BLOCKSIZE:
                raise tarfile.ReadError(
                    f"the data stops after {stream.count} bytes, without the end-of-archive block"
                )
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as error:
        raise CorruptDataError(
            f"{path} is not a readable tar archive: it is truncated or damaged ({error}). "
            "Download or pack it again."
        ) from error


def _decompressed(raw):
    """`raw` unwrapped by its magic bytes: gzip, bzip2, xz, or an uncompressed tar."""
    head = raw.read(6)
    raw.seek(0)
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw)
    if head.startswith(b"BZh"):
        return bz2.BZ2File(raw)
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return raw


class _CountingReader(io.RawIOBase):
    """A read-only stream that counts the bytes it passes on."""

    def __init__(self, stream):
        self._stream = stream
        self.count = 0

    def readable(self):
        return True

    def read(self, size=-1):
        data = self._stream.read(size)
        self.count += len(data)
        return data

    def drain(self):
        while self.read(1 << 20):
            pass


def _iter_zip(path, wanted):
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                name = _normalise(member.filename)
                if member.is_dir() or _is_junk(name) or not wanted(name):
                    continue
                yield name, archive.read(member)
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as error:
        raise CorruptDataError(
            f"{path} is not a readable zip archive: it is truncated or damaged ({error}). "
            "Download or pack it again."
        ) from error
