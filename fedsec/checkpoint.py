"""Run checkpoints: the global model and strategy state after a round, never half-written.

A checkpoint is a directory ``OUT/checkpoint/`` holding ``arrays.npz`` (the
global model and every array of the strategy state) and ``state.json`` (the
round, the rest of the strategy state, and metadata such as the run config).
:func:`save_checkpoint` writes a complete new directory next to the old one and
swaps it in with renames, so a reader (or a resumed run) finds either the
previous checkpoint or the new one, never a mix; :func:`load_checkpoint` reads
it back.  The strategy state is any nesting of dicts and lists whose leaves are
numpy arrays or JSON values.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedsec.errors import FedsecError

__all__ = ["CHECKPOINT_DIR", "Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint"]

#: Name of the checkpoint directory inside a run's output directory.
CHECKPOINT_DIR = "checkpoint"
_ARRAYS = "arrays.npz"
_STATE = "state.json"
_ARRAY_TAG = "__array__"


class CheckpointError(FedsecError):
    """A checkpoint is missing or unreadable."""


@dataclass(frozen=True)
class Checkpoint:
    """What a run needs to continue after round ``round``."""

    round: int
    arrays: list[np.ndarray]
    state: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def _flatten(value: Any, arrays: dict[str, np.ndarray], path: str) -> Any:
    """``value`` with every numpy array replaced by ``{"__array__": key}`` (the array goes to ``arrays``)."""
    if isinstance(value, np.ndarray):
        key = f"state/{len(arrays)}"
        arrays[key] = value
        return {_ARRAY_TAG: key}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _flatten(v, arrays, f"{path}/{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_flatten(v, arrays, f"{path}/{i}") for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(
        f"checkpoint state at {path or '/'} holds a {type(value).__name__}; use arrays or JSON values"
    )


def _restore(value: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {_ARRAY_TAG}:
            return arrays[value[_ARRAY_TAG]]
        return {k: _restore(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v, arrays) for v in value]
    return value


def save_checkpoint(
    directory: Path,
    *,
    round: int,
    arrays: Sequence[np.ndarray],
    state: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write the checkpoint of ``round`` to ``directory`` (replacing the previous one atomically)."""
    directory = Path(directory)
    partial = directory.with_name(directory.name + ".partial")
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    stored: dict[str, np.ndarray] = {f"model/{i}": np.asarray(a) for i, a in enumerate(arrays)}
    document = {
        "round": int(round),
        "model_arrays": len(arrays),
        "state": _flatten(dict(state or {}), stored, ""),
        "meta": _flatten(dict(meta or {}), stored, ""),
    }
    with (partial / _ARRAYS).open("wb") as handle:
        np.savez(handle, **stored)  # type: ignore[arg-type]
        handle.flush()
        os.fsync(handle.fileno())
    with (partial / _STATE).open("w") as handle:
        json.dump(document, handle)
        handle.flush()
        os.fsync(handle.fileno())
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    partial.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def load_checkpoint(directory: Path) -> Checkpoint:
    """Read the checkpoint in ``directory`` (or the previous one, if a save was interrupted mid-swap).

    Raises
    ------
    CheckpointError
        If there is no complete checkpoint there.
    """
    directory = Path(directory)
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if (candidate / _STATE).is_file() and (candidate / _ARRAYS).is_file():
            break
    else:
        raise CheckpointError(f"no checkpoint in {directory} (a run writes one after every round)")
    try:
        document = json.loads((candidate / _STATE).read_text())
        with np.load(candidate / _ARRAYS, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"the checkpoint in {candidate} cannot be read ({error})") from None
    model = [arrays[f"model/{i}"] for i in range(int(document["model_arrays"]))]
    return Checkpoint(
        round=int(document["round"]),
        arrays=model,
        state=_restore(document["state"], arrays),
        meta=_restore(document["meta"], arrays),
    )
