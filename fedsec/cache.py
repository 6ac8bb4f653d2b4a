"""On-disk cache of tensors keyed by the configuration that produced them.

Pretrained initial models and adversarial test sets take minutes to make and
are the same for every run with the same inputs; :func:`cached_tensors` stores
them under ``cache_dir/<kind>-<sha256 of the key>.pt`` and rebuilds only when
the key changes.  Writes are atomic (temporary file + rename), so concurrent
processes that build the same entry at once never read a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

Tensors = dict[str, torch.Tensor]


def default_cache_dir() -> Path:
    """``$FEDSEC_CACHE``, else ``$XDG_CACHE_HOME/fedsec``, else ``~/.cache/fedsec``."""
    if os.environ.get("FEDSEC_CACHE"):
        return Path(os.environ["FEDSEC_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fedsec"


#: Bumped whenever code that produces cached tensors changes what it produces.
CACHE_VERSION = 2


def cache_key(key: Mapping[str, Any]) -> str:
    """A stable hex digest of a JSON-serialisable mapping (and :data:`CACHE_VERSION`)."""
    text = json.dumps({"version": CACHE_VERSION, **key}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def tensors_digest(tensors: Mapping[str, torch.Tensor] | list[Any]) -> str:
    """A digest of tensor contents (e.g. a model's weights), to key what was derived from them."""
    digest = hashlib.sha256()
    items = tensors.items() if isinstance(tensors, Mapping) else enumerate(tensors)
    for name, value in items:
        digest.update(str(name).encode())
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        digest.update(memoryview(array.tobytes()))
    return digest.hexdigest()[:24]


def cached_tensors(
    kind: str, key: Mapping[str, Any], build: Callable[[], Tensors], cache_dir: Path
) -> Tensors:
    """Load ``kind`` for ``key`` from ``cache_dir``, or ``build`` it and store it."""
    path = Path(cache_dir) / f"{kind}-{cache_key(key)}.pt"
    if path.is_file():
        try:
            loaded = torch.load(path, weights_only=True)
            logger.info("cache hit: %s", path)
            return dict(loaded)
        except (OSError, RuntimeError, EOFError) as error:
            logger.warning("cache entry %s unreadable (%s); rebuilding", path, error)
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{kind}-", suffix=".tmp")
    os.close(handle)
    torch.save(value, temporary)
    os.replace(temporary, path)
    logger.info("cached %s", path)
    return value


Arrays = dict[str, np.ndarray]


def cached_arrays(
    kind: str, key: Mapping[str, Any], build: Callable[[], Arrays], cache_dir: Path | None
) -> Arrays:
    """Load ``kind`` for ``key`` from ``cache_dir/<kind>-<digest>.npz``, or ``build`` it and store it.

    Numpy arrays only (no pickles: a cache file can never run code). ``cache_dir=None``
    builds without caching; an unwritable cache directory is logged and skipped.
    """
    if cache_dir is None:
        return build()
    path = Path(cache_dir) / f"{kind}-{cache_key(key)}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as stored:
                return {name: stored[name] for name in stored.files}
        except (OSError, ValueError, EOFError) as error:
            logger.warning("cache entry %s unreadable (%s); rebuilding", path, error)
    value = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{kind}-", suffix=".npz.tmp")
        with os.fdopen(handle, "wb") as out:
            np.savez(out, **value)  # type: ignore[arg-type]
        os.replace(temporary, path)
    except OSError as error:
        logger.warning("could not cache %s in %s (%s)", kind, cache_dir, error)
    return value
