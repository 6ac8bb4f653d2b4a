"""Partitioning of training data across clients, and the server's own held-out splits.

Client partitions (IID, Dirichlet-α label skew, pathological k-classes-per-client)
come from flwr-datasets' partitioners run on a local, in-memory
``datasets.Dataset`` of ``(label, index)`` rows, so nothing is downloaded. Every
function is deterministic under its ``seed``.

The server keeps its own named held-out splits (validation, the PDGAN auxiliary
set, the clean distillation set of the layered backdoor defense) carved out of the
training data *before* partitioning, so that no client ever holds a sample the
server uses (:func:`client_partition` enforces this for every Flower client).

Papers: the data setups of FDA³, DiPSeN, multi-party targeted model poisoning,
the layered backdoor defense and PDGAN (IID and non-IID client data; a small
server-side clean/auxiliary set).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedsec.cache import cached_arrays
from fedsec.config import PARTITION_SCHEMES
from fedsec.data.containers import DatasetBundle, TensorSplit
from fedsec.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "PARTITIONERS",
    "client_partition",
    "partition_indices",
    "partition_sizes",
    "server_split_indices",
    "server_splits",
]

#: The partitioning schemes (one list: the config schema checks `partitioning` against the same tuple).
PARTITIONERS: tuple[str, ...] = PARTITION_SCHEMES


def _check_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _validate_labels(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ConfigError(f"labels must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"labels must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)  # always a copy: the caller's array is never touched


def partition_indices(
    labels: np.ndarray,
    *,
    num_partitions: int,
    scheme: str,
    seed: int,
    alpha: float = 0.5,
    classes_per_partition: int = 2,
) -> list[np.ndarray]:
    """Split ``range(len(labels))`` into ``num_partitions`` client partitions.

    Parameters
    ----------
    labels
        Integer class label of every sample (1-D); not modified.
    num_partitions
        Number of partitions, ``1 <= num_partitions <= len(labels)``.
    scheme
        One of :data:`PARTITIONERS`:

        ``"iid"``
            The indices are shuffled with ``seed`` and cut into contiguous, balanced
            shards by ``IidPartitioner`` (which itself does not shuffle); sizes
            differ by at most one.
        ``"dirichlet"``
            ``DirichletPartitioner(alpha=alpha, min_partition_size=m)`` with
            ``m = min(10, len(labels) // num_partitions // 2)``; per class, the
            share of each partition is drawn from Dir(α). Small α gives strong label
            skew. flwr-datasets resamples up to 10 times to meet ``m``.
        ``"pathological"``
            ``PathologicalPartitioner(num_classes_per_partition=classes_per_partition,
            class_assignment_mode="first-deterministic")``: partition ``i`` gets
            class ``i % num_classes`` plus ``classes_per_partition - 1`` random
            others; each class's samples are split evenly among the partitions that
            hold it. If ``num_partitions * classes_per_partition`` is too small to
            use every class, the samples of unused classes are left out (a warning is
            logged).
    seed
        Seed of all randomness.
    alpha
        Dirichlet concentration (``> 0``); used by ``"dirichlet"`` only.
    classes_per_partition
        Classes per partition, ``1..num_classes``; used by ``"pathological"`` only.

    Returns
    -------
    list of numpy.ndarray
        One sorted int64 index array per partition; the arrays are disjoint.

    Raises
    ------
    ConfigError
        If an argument is out of range (the message names it) or flwr-datasets
        cannot build the partitioning (e.g. Dirichlet keeps producing a partition
        smaller than the minimum size).
    """
    y = _validate_labels(labels)
    n = int(y.shape[0])
    num_partitions = _check_int("num_partitions", num_partitions)
    seed = _check_int("seed", seed)
    if n == 0:
        raise ConfigError("labels must not be empty: there is nothing to partition")
    if not 1 <= num_partitions <= n:
        raise ConfigError(
            f"num_partitions must be between 1 and the number of samples ({n}), got {num_partitions}"
        )
    if scheme not in PARTITIONERS:
        raise ConfigError(f"unknown partitioning scheme {scheme!r}; choose one of: {', '.join(PARTITIONERS)}")
    num_classes = int(np.unique(y).size)
    if scheme == "dirichlet":
        if isinstance(alpha, bool) or not isinstance(alpha, int | float | np.integer | np.floating):
            raise ConfigError(f"alpha must be a positive number, got {alpha!r}")
        if not (np.isfinite(alpha) and alpha > 0):
            raise ConfigError(f"alpha must be a positive number, got {alpha!r}")
    if scheme == "pathological":
        classes_per_partition = _check_int("classes_per_partition", classes_per_partition)
        if not 1 <= classes_per_partition <= num_classes:
            raise ConfigError(
                f"classes_per_partition must be between 1 and the number of classes ({num_classes}), "
                f"got {classes_per_partition}"
            )

    import datasets
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, PathologicalPartitioner
    from flwr_datasets.partitioner.partitioner import Partitioner

    order = np.arange(n, dtype=np.int64)
    partitioner: Partitioner
    if scheme == "iid":
        order = np.random.default_rng(seed).permutation(n).astype(np.int64)
        partitioner = IidPartitioner(num_partitions=num_partitions)
    elif scheme == "dirichlet":
        min_size = min(10, n // num_partitions // 2)
        partitioner = DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=float(alpha),
            min_partition_size=min_size,
            self_balancing=False,
            shuffle=False,
            seed=seed,
        )
    else:
        partitioner = PathologicalPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            num_classes_per_partition=classes_per_partition,
            class_assignment_mode="first-deterministic",
            shuffle=False,
            seed=seed,
        )
    partitioner.dataset = datasets.Dataset.from_dict({"label": y[order], "index": order})

    parts: list[np.ndarray] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            for pid in range(num_partitions):
                idx = np.asarray(partitioner.load_partition(pid)["index"], dtype=np.int64)
                parts.append(np.sort(idx))
        except ValueError as exc:
            hint = (
                " (try a larger alpha or fewer partitions)"
                if scheme == "dirichlet"
                else " (try fewer partitions or fewer classes_per_partition)"
            )
            raise ConfigError(
                f"cannot build {scheme} partitioning of {n} samples into {num_partitions} partitions: "
                f"{exc}{hint}"
            ) from exc
    for w in caught:
        logger.debug("flwr-datasets: %s", w.message)
    covered = sum(len(p) for p in parts)
    if covered != n:
        logger.warning(
            "%s partitioning into %s partitions leaves %s of %s samples unassigned (unused classes)",
            scheme,
            num_partitions,
            n - covered,
            n,
        )
    logger.debug("%s partition sizes: %s", scheme, [len(p) for p in parts])
    return parts


def _stratified_choice(labels: np.ndarray, pool: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Pick ``k`` of the positions in ``pool``, per class in proportion to class frequency.

    Largest-remainder allocation; if ``k`` is smaller than the number of classes in
    the pool, a plain uniform choice without replacement is used instead.
    """
    if k == 0:
        return np.empty(0, dtype=np.int64)
    pool_labels = labels[pool]
    classes, counts = np.unique(pool_labels, return_counts=True)
    if k < classes.size:
        return np.sort(rng.choice(pool, size=k, replace=False)).astype(np.int64)
    quotas = k * counts / counts.sum()
    take = np.floor(quotas).astype(np.int64)
    remainder = k - int(take.sum())
    if remainder:
        order = np.argsort(-(quotas - take), kind="stable")
        take[order[:remainder]] += 1
    chosen = [
        rng.choice(pool[pool_labels == c], size=int(t), replace=False)
        for c, t in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def server_splits(
    train: TensorSplit, *, sizes: Mapping[str, int], seed: int
) -> tuple[TensorSplit, dict[str, TensorSplit]]:
    """Carve disjoint, class-stratified, named held-out splits out of the training data.

    Parameters
    ----------
    train
        The full training split; not modified.
    sizes
        ``name -> number of samples`` (e.g. ``{"validation": 200, "auxiliary": 0,
        "clean": 100}``). Splits are drawn one after another in sorted name order,
        so the result does not depend on the mapping's insertion order. Size 0
        gives an empty split with the right image shape. A size smaller than the
        number of classes is drawn uniformly instead of stratified.
    seed
        Seed of the draw.

    Returns
    -------
    remaining : TensorSplit
        The training samples in no split (in their original order), for the clients.
    splits : dict of str to TensorSplit
        One entry per name in ``sizes``.

    Raises
    ------
    ConfigError
        If a size is negative or not an integer, or the splits need more samples
        than ``train`` holds (the message names the split).
    """
    remaining_idx, chosen = server_split_indices(train.y.numpy(), sizes=sizes, seed=seed)
    remaining = train.subset(remaining_idx)
    splits = {name: train.subset(idx) for name, idx in chosen.items()}
    if chosen:
        logger.debug(
            "server splits %s; %s samples left for clients",
            {k: len(v) for k, v in splits.items()},
            len(remaining),
        )
    return remaining, splits


def server_split_indices(
    labels: np.ndarray, *, sizes: Mapping[str, int], seed: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`server_splits` as indices into the training data: ``(remaining, {name: indices})``.

    Takes the training labels only, so nothing is copied; raises as :func:`server_splits` does.
    """
    seed = _check_int("seed", seed)
    n = len(labels)
    taken = np.zeros(n, dtype=bool)
    rng = np.random.default_rng(seed)
    for name, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, int | np.integer):
            raise ConfigError(f"size of server split {name!r} must be an integer, got {size!r}")
        if size < 0:
            raise ConfigError(f"size of server split {name!r} must be >= 0, got {size}")
    total = sum(int(v) for v in sizes.values())
    if total > n:
        listed = ", ".join(f"{name!r}={sizes[name]}" for name in sorted(sizes))
        raise ConfigError(f"server splits {listed} need {total} samples but the training data holds only {n}")
    chosen: dict[str, np.ndarray] = {}
    for name in sorted(sizes):
        size = sizes[name]
        pool = np.flatnonzero(~taken)
        if size > pool.size:
            raise ConfigError(
                f"server split {name!r} asks for {size} samples but only {pool.size} of the {n} "
                "training samples are left"
            )
        idx = _stratified_choice(labels, pool, int(size), rng)
        taken[idx] = True
        chosen[name] = idx
    return np.flatnonzero(~taken), chosen


def client_partition(
    bundle: DatasetBundle,
    *,
    partition_id: int,
    num_partitions: int,
    scheme: str,
    seed: int,
    alpha: float,
    classes_per_partition: int,
    server_sizes: Mapping[str, int],
    cache_dir: Path | None = None,
) -> TensorSplit:
    """The training data of one client: its partition of what the server splits leave.

    Applies :func:`server_splits` to ``bundle.train`` (so no client ever sees a
    server sample), partitions the remainder with :func:`partition_indices`, and
    returns partition ``partition_id``. Every client computes the same split and
    partitioning from the same ``seed``, so the partitions are disjoint.

    Parameters
    ----------
    bundle
        The loaded dataset.
    partition_id
        This client's partition, ``0 <= partition_id < num_partitions``.
    num_partitions, scheme, seed, alpha, classes_per_partition
        As in :func:`partition_indices` (``seed`` also seeds the server splits).
    server_sizes
        As ``sizes`` in :func:`server_splits`; must equal the server's.
    cache_dir
        Where every partition's indices are cached on disk (computed once for all clients,
        which then need not import flwr-datasets); ``None``: no disk cache.

    Returns
    -------
    TensorSplit
        A fresh copy of the client's samples.

    Raises
    ------
    ConfigError
        If an argument is out of range (the message names it).
    """
    partition_id = _check_int("partition_id", partition_id)
    num_partitions = _check_int("num_partitions", num_partitions)
    if num_partitions < 1:
        raise ConfigError(f"num_partitions must be >= 1, got {num_partitions}")
    if not 0 <= partition_id < num_partitions:
        raise ConfigError(f"partition_id must be in 0..{num_partitions - 1}, got {partition_id}")
    remaining, parts = _client_parts(
        bundle, num_partitions, scheme, seed, alpha, classes_per_partition, server_sizes, cache_dir
    )
    return bundle.train.subset(remaining[parts[partition_id]])  # only this client's samples are copied


def partition_sizes(
    bundle: DatasetBundle,
    *,
    num_partitions: int,
    scheme: str,
    seed: int,
    alpha: float,
    classes_per_partition: int,
    server_sizes: Mapping[str, int],
    cache_dir: Path | None = None,
) -> tuple[int, ...]:
    """The number of training samples of every client, as :func:`client_partition` would give them.

    Parameters are those of :func:`client_partition`; no sample is copied.

    Raises
    ------
    ConfigError
        If an argument is out of range (the message names it).
    """
    num_partitions = _check_int("num_partitions", num_partitions)
    if num_partitions < 1:
        raise ConfigError(f"num_partitions must be >= 1, got {num_partitions}")
    _, parts = _client_parts(
        bundle, num_partitions, scheme, seed, alpha, classes_per_partition, server_sizes, cache_dir
    )
    return tuple(len(part) for part in parts)


def _client_parts(
    bundle: DatasetBundle,
    num_partitions: int,
    scheme: str,
    seed: int,
    alpha: float,
    classes_per_partition: int,
    server_sizes: Mapping[str, int],
    cache_dir: Path | None,
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """The indices into ``bundle.train`` the server splits leave, and every partition's indices into those.

    Both are computed once per process (a client is built for every message; copying what the
    server splits leave cost a copy of the whole training set per message).
    """
    labels = bundle.train.y.numpy().astype(np.int64)
    remaining = _memoized_remaining(labels.tobytes(), tuple(sorted(server_sizes.items())), seed)
    parts = _memoized_partitions(
        labels[remaining].tobytes(),
        num_partitions,
        scheme,
        seed,
        float(alpha),
        classes_per_partition,
        None if cache_dir is None else str(cache_dir),
    )
    return remaining, parts


@functools.lru_cache(maxsize=8)
def _memoized_remaining(labels: bytes, sizes: tuple[tuple[str, int], ...], seed: int) -> np.ndarray:
    """The remaining indices of :func:`server_split_indices` on the int64 ``labels`` bytes (read-only)."""
    remaining, _ = server_split_indices(np.frombuffer(labels, dtype=np.int64), sizes=dict(sizes), seed=seed)
    remaining.setflags(write=False)
    return remaining


@functools.lru_cache(maxsize=8)
def _memoized_partitions(
    labels: bytes,
    num_partitions: int,
    scheme: str,
    seed: int,
    alpha: float,
    classes_per_partition: int,
    cache_dir: str | None,
) -> tuple[np.ndarray, ...]:
    """:func:`partition_indices` of the int64 ``labels`` bytes, computed once per process (and on disk).

    Flower builds a client for every message, and the partitioners compute every
    partition to return one: at 1000 clients that was 1.4 s of each client build.
    The arrays are made read-only, since every caller shares them.
    """

    def build() -> dict[str, np.ndarray]:
        parts = partition_indices(
            np.frombuffer(labels, dtype=np.int64),
            num_partitions=num_partitions,
            scheme=scheme,
            seed=seed,
            alpha=alpha,
            classes_per_partition=classes_per_partition,
        )
        return {f"part{i}": part for i, part in enumerate(parts)}

    key = {
        "labels": hashlib.sha256(labels).hexdigest(),
        "num_partitions": num_partitions,
        "scheme": scheme,
        "seed": seed,
        "alpha": alpha,
        "classes_per_partition": classes_per_partition,
    }
    stored = cached_arrays("partitions", key, build, None if cache_dir is None else Path(cache_dir))
    parts = tuple(np.asarray(stored[f"part{i}"], dtype=np.int64) for i in range(num_partitions))
    for part in parts:
        part.setflags(write=False)
    return parts
