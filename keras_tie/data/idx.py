"""Reader of IDX files (the MNIST family's format), gzipped or plain.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number
of dimensions), one big-endian uint32 per dimension, then the values, big-endian,
row-major. http://yann.lecun.com/exdb/mnist/ describes it.
"""

import gzip
import zlib

import numpy as np

from keras_tie.data.errors import CorruptDataError, DatasetNotFoundError

_GZIP_MAGIC = b"\x1f\x8b"
_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path):
    """The array stored in the IDX file `path` (`.gz` or plain, told apart by content).

    Raises `CorruptDataError` naming the file when the gzip stream is truncated or
    damaged, the magic number is wrong, or the header's shape does not match the
    number of bytes that follow it.
    """
    data = read_bytes(path)
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] not in _TYPES:
        raise CorruptDataError(
            f"{path} is not an IDX file: it must start with 00 00 <type code> <ndim>, type code "
            f"one of {sorted(hex(code) for code in _TYPES)}. Received: magic={data[:4].hex(' ')!r}"
        )
    dtype, ndim = _TYPES[data[2]], data[3]
    header_size = 4 + 4 * ndim
    if ndim == 0 or len(data) < header_size:
        raise CorruptDataError(
            f"{path}: the IDX header is truncated or declares no dimensions. "
            f"Received: ndim={ndim}, file size={len(data)} bytes"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_size
    if actual != expected:
        raise CorruptDataError(
            f"{path}: the IDX header declares shape {shape} ({expected} bytes of {dtype.name}), "
            f"but {actual} bytes follow the header. The file is truncated or damaged; "
            "download it again."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_bytes(path):
    """The bytes of `path`, gunzipped when it is gzip data; errors name the file."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head != _GZIP_MAGIC:
                return f.read()
            with gzip.GzipFile(fileobj=f) as stream:
                return stream.read()
    except FileNotFoundError:
        raise DatasetNotFoundError(f"File not found: {path}") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise CorruptDataError(
            f"{path} is a truncated or damaged gzip file ({error}). Download it again."
        ) from error
    except OSError as error:
        raise CorruptDataError(f"Cannot read {path}: {error}") from error
