"""Wiring from a :class:`~fedsec.config.RunConfig` to data, models and seeds.

Both sides of a run (the ServerApp and every ClientApp) call these, so that
a client and the server agree on what the held-out server splits are and
which partition a client owns, without any data ever crossing between them.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedsec.cache import cached_arrays, default_cache_dir
from fedsec.config import RunConfig
from fedsec.data import DatasetBundle, TensorSplit, client_partition, load_dataset, server_splits
from fedsec.data.partition import partition_sizes
from fedsec.models import build_model

SERVER_SPLITS = ("validation", "auxiliary", "clean", "pretrain")


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from the run seed and ``keys`` (partition id, round, ...)."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def torch_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from :func:`derive_seed`."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys))


def load_bundle(config: RunConfig) -> DatasetBundle:
    """Load the configured dataset (its own train/test split is seeded by the run seed).

    Memoized per process for the same (dataset, root, seed): Flower rebuilds a
    client for every message, and a simulation actor serves many clients, so
    re-reading the files each time would dominate a round.  Bundles are never
    mutated (every consumer takes copies via ``TensorSplit.subset``).
    """
    options: tuple[tuple[str, str], ...] = ()
    if config.dataset == "csv":
        options = (("label_column", config.csv_label_column),)
        if config.csv_feature_columns:
            options += (("feature_columns", config.csv_feature_columns),)
    cache = str(Path(config.cache_dir) if config.cache_dir else default_cache_dir())
    return _load_bundle(config.dataset, config.data_root or None, config.seed, options, cache)


@functools.lru_cache(maxsize=2)
def _load_bundle(
    name: str, root: str | None, seed: int, options: tuple[tuple[str, str], ...], cache_dir: str
) -> DatasetBundle:
    """The bundle from the on-disk cache (saves a client process the loaders' imports and parsing)."""

    def build() -> dict[str, np.ndarray]:
        bundle = load_dataset(name, root=root, seed=seed, options=dict(options) or None)
        return {
            "train_x": bundle.train.x.numpy(),
            "train_y": bundle.train.y.numpy(),
            "test_x": bundle.test.x.numpy(),
            "test_y": bundle.test.y.numpy(),
            "class_names": np.array(bundle.class_names, dtype=str),
        }

    key = {
        "kind": "bundle",
        "dataset": name,
        "root": root,
        "stamp": _stamp(root),
        "seed": seed,
        "options": options,
    }
    arrays = cached_arrays("bundle", key, build, Path(cache_dir))
    return DatasetBundle(
        name=name,
        train=TensorSplit(x=torch.from_numpy(arrays["train_x"]), y=torch.from_numpy(arrays["train_y"])),
        test=TensorSplit(x=torch.from_numpy(arrays["test_x"]), y=torch.from_numpy(arrays["test_y"])),
        num_classes=len(arrays["class_names"]),
        input_shape=tuple(int(v) for v in arrays["train_x"].shape[1:]),  # type: ignore[arg-type]
        class_names=tuple(str(v) for v in arrays["class_names"]),
    )


def _stamp(root: str | None) -> list[int] | None:
    """Size and modification time of the data root (a changed file or directory is a new cache entry)."""
    if root is None:
        return None
    try:
        status = Path(root).stat()
    except OSError:
        return None
    return [int(status.st_size), int(status.st_mtime_ns)]


def server_split_sizes(config: RunConfig) -> dict[str, int]:
    """Sizes of the server-held splits carved from the training data.

    ``pretrain`` is listed only when ``pretrain-size`` is set, so runs without it
    draw (and cache) exactly the splits they always did.
    """
    sizes = {
        "validation": config.validation_size,
        "auxiliary": config.auxiliary_size,
        "clean": config.clean_size,
    }
    if config.pretrain_size:
        sizes["pretrain"] = config.pretrain_size
    return sizes


def pretrain_data(config: RunConfig, bundle: DatasetBundle) -> TensorSplit:
    """What the initial model is pre-trained on.

    With ``pretrain-size`` the server's own ``pretrain`` split, disjoint from
    every client partition and from the test split (FDA³, Song et al. §IV: the
    devices retrain on images the initial model never saw); without it, every
    training example the server splits leave, i.e. the clients' data.
    """
    remaining, splits = server_splits(bundle.train, sizes=server_split_sizes(config), seed=config.seed)
    return splits["pretrain"] if config.pretrain_size else remaining


def server_data(config: RunConfig, bundle: DatasetBundle) -> dict[str, TensorSplit]:
    """The server's data: ``test`` plus the named held-out splits."""
    _, splits = server_splits(bundle.train, sizes=server_split_sizes(config), seed=config.seed)
    return {"test": bundle.test, **splits}


def client_data(
    config: RunConfig, bundle: DatasetBundle, *, partition_id: int, num_partitions: int
) -> TensorSplit:
    """Client ``partition_id``'s share of the training data (never a server split)."""
    return client_partition(
        bundle,
        partition_id=partition_id,
        num_partitions=num_partitions,
        scheme=config.partitioning,
        seed=config.seed,
        alpha=config.dirichlet_alpha,
        classes_per_partition=config.classes_per_partition,
        server_sizes=server_split_sizes(config),
        cache_dir=Path(config.cache_dir) if config.cache_dir else default_cache_dir(),
    )


def client_partition_sizes(config: RunConfig, bundle: DatasetBundle) -> tuple[int, ...]:
    """Each client's training-set size (partitions ``0 .. num-clients − 1``, as :func:`client_data`)."""
    return partition_sizes(
        bundle,
        num_partitions=config.num_clients,
        scheme=config.partitioning,
        seed=config.seed,
        alpha=config.dirichlet_alpha,
        classes_per_partition=config.classes_per_partition,
        server_sizes=server_split_sizes(config),
        cache_dir=Path(config.cache_dir) if config.cache_dir else default_cache_dir(),
    )


def data_key(config: RunConfig, *, partition_id: int, num_partitions: int) -> dict[str, object]:
    """What identifies a client's data, for cache keys."""
    return {
        "dataset": config.dataset,
        "seed": config.seed,
        "partitioning": config.partitioning,
        "alpha": config.dirichlet_alpha,
        "classes": config.classes_per_partition,
        "server-splits": server_split_sizes(config),
        "partition": partition_id,
        "of": num_partitions,
    }


def new_model(config: RunConfig, bundle: DatasetBundle) -> nn.Module:
    """A freshly initialised model of the configured kind for ``bundle``'s inputs."""
    return build_model(
        config.model,
        input_shape=bundle.input_shape,
        num_classes=bundle.num_classes,
        seed=config.seed,
        options=configured_model_options(config),
    )


def configured_model_options(config: RunConfig) -> dict[str, float]:
    """The configured options of models that take any (DiPSeN's noise and dropout)."""
    if config.model in ("dipsen", "dipsen-paper"):
        return {
            "sigma": config.dipsen_sigma,
            "sensitivity": config.dipsen_sensitivity,
            "dropout": config.dipsen_dropout,
            "test_noise": config.dipsen_test_noise,
        }
    return {}
