"""On-disk formats of the image datasets: IDX files (MNIST, Fashion-MNIST) and CIFAR-10 python batches.

Both are parsed here with numpy and :mod:`pickle` rather than through torchvision,
whose MD5 checks reject re-packed copies (see :mod:`fedsec.data.datasets`); every
malformed or missing file raises :class:`~fedsec.errors.DataUnavailableError`
naming it.  As with torchvision, only load CIFAR-10 batches from a source you
trust: they are pickles.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedsec.data.containers import TensorSplit, _split
from fedsec.errors import DataUnavailableError

__all__ = [
    "CIFAR_FILES",
    "CIFAR_TRAIN_BATCHES",
    "IDX_FILES",
    "batch_entry",
    "find_idx_dir",
    "read_cifar_batches",
    "read_idx",
    "unpickle_batch",
]

#: The four IDX files of MNIST and Fashion-MNIST: train images, train labels, test images, test labels.
IDX_FILES: tuple[str, str, str, str] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
#: The five training batches of ``cifar-10-batches-py/``.
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
#: Every file of ``cifar-10-batches-py/`` a loader needs: training batches, test batch, metadata.
CIFAR_FILES = (*CIFAR_TRAIN_BATCHES, "test_batch", "batches.meta")

_IDX_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or unpacked) into a numpy array.

    The format: two zero bytes, a type byte (``0x08`` = uint8, ...), a byte with the
    number of dimensions, one big-endian uint32 per dimension, then the data.

    Parameters
    ----------
    path
        The file; names ending in ``.gz`` are decompressed.

    Returns
    -------
    numpy.ndarray
        A new array with the file's shape and dtype.

    Raises
    ------
    DataUnavailableError
        If the file is not a well-formed IDX file.
    """
    p = Path(path)
    opener: Callable[..., Any] = gzip.open if p.name.endswith(".gz") else open
    try:
        with opener(p, "rb") as fh:
            raw: bytes = fh.read()
    except (OSError, EOFError) as exc:
        raise DataUnavailableError(f"cannot read IDX file {p}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataUnavailableError(f"{p} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataUnavailableError(f"{p} is not an IDX file (truncated header)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataUnavailableError(
            f"{p} is not a valid IDX file: header says {dims} ({expected} bytes), "
            f"found {len(raw) - header} bytes"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).copy()


def find_idx_dir(candidates: Sequence[Path]) -> dict[str, Path] | None:
    """The first directory among ``candidates`` holding all four IDX files (``.gz`` or not)."""
    for directory in candidates:
        found: dict[str, Path] = {}
        for name in IDX_FILES:
            for candidate in (directory / name, directory / f"{name}.gz"):
                if candidate.is_file():
                    found[name] = candidate
                    break
        if len(found) == len(IDX_FILES):
            return found
    return None


def unpickle_batch(path: Path) -> dict[Any, Any]:
    """The dict pickled in one CIFAR-10 file (a batch or ``batches.meta``)."""
    try:
        with path.open("rb") as fh:
            obj = pickle.load(fh, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise DataUnavailableError(f"cannot read CIFAR-10 batch {path}: {exc}") from exc
    if not isinstance(obj, dict):
        raise DataUnavailableError(f"{path} is not a CIFAR-10 batch (expected a pickled dict)")
    return obj


def batch_entry(d: dict[Any, Any], key: str, path: Path) -> Any:
    """Look up ``key`` as str or bytes (python-2 pickles give either, depending on the encoding)."""
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    raise DataUnavailableError(f"{path} is not a CIFAR-10 batch (no {key!r} entry)")


def read_cifar_batches(paths: Sequence[Path]) -> TensorSplit:
    """The images (``(N, 3, 32, 32)`` in ``[0, 1]``) and labels of the CIFAR-10 batches ``paths``."""
    xs, ys = [], []
    for path in paths:
        batch = unpickle_batch(path)
        data = np.asarray(batch_entry(batch, "data", path), dtype=np.uint8)
        labels = np.asarray(batch_entry(batch, "labels", path), dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != labels.shape[0]:
            raise DataUnavailableError(
                f"{path}: data of shape {data.shape} and {labels.shape[0]} labels are not a CIFAR-10 batch"
            )
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    x = np.concatenate(xs).astype(np.float32) / 255.0
    y = np.concatenate(ys)
    if y.size and (y.min() < 0 or y.max() >= 10):
        raise DataUnavailableError(f"CIFAR-10 labels must be in 0..9, found {y.min()}..{y.max()}")
    return _split(x, y)
