"""The IDX file format of MNIST and Fashion-MNIST (LeCun et al.): read and write, gzipped or not.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values in C order, big-endian.
One reader serves both data sets; nothing is downloaded.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

# type code -> numpy dtype (big-endian where it matters)
DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
          0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
CODES = {dtype.newbyteorder("="): code for code, dtype in DTYPES.items()}


class IdxFormatError(ValueError):
    pass


def _open(path: Path, mode: str):
    return gzip.open(path, mode) if path.suffix == ".gz" else open(path, mode)


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in an IDX file (`.gz` is decompressed on the fly), in native byte order."""
    path = Path(path)
    with _open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in DTYPES:
        raise IdxFormatError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()}).")
    dtype, ndim = DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise IdxFormatError(f"{path}: header says shape {shape} ({count * dtype.itemsize} bytes of data), "
                             f"the file holds {len(raw) - header}. Is it truncated?")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write `array` as an IDX file, gzipped when `path` ends in `.gz`."""
    path, array = Path(path), np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in CODES:
        raise IdxFormatError(f"IDX has no type for dtype {array.dtype}; use one of {sorted(map(str, CODES))}.")
    code = CODES[native]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=DTYPES[code]).tobytes())
    return path
