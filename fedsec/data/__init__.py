"""Data for fedsec: dataset registry and loaders, client partitioning, server-side splits.

``load_dataset(name, root=..., seed=..., options=...)`` returns a :class:`DatasetBundle`
of in-memory tensors for any name in :data:`DATASETS` (``mnist-5k`` by default,
``fashion-mnist``, ``mnist``, ``cifar10``, ``digits``, ``synthetic``, and ``csv`` for
a user's tabular data such as CTU-13 flows, see :func:`load_csv`); nothing is
ever downloaded. :func:`partition_indices` splits labels across clients with
flwr-datasets' partitioners (:data:`PARTITIONERS`: IID, Dirichlet-α,
pathological), :func:`server_splits` carves the server's held-out validation,
auxiliary (PDGAN) and clean (distillation) sets out of the training data, and
:func:`client_partition` gives one Flower client its share of what is left.

Papers: the data setups of FDA³, DiPSeN, multi-party targeted model poisoning,
the layered backdoor defense and PDGAN.
"""

from fedsec.data.containers import DatasetBundle, TensorSplit
from fedsec.data.datasets import DATASETS, DEFAULT_DATASET, load_dataset
from fedsec.data.formats import read_idx
from fedsec.data.partition import PARTITIONERS, client_partition, partition_indices, server_splits
from fedsec.data.tabular import load_csv

__all__ = [
    "DATASETS",
    "DEFAULT_DATASET",
    "PARTITIONERS",
    "DatasetBundle",
    "TensorSplit",
    "client_partition",
    "load_csv",
    "load_dataset",
    "partition_indices",
    "read_idx",
    "server_splits",
]
