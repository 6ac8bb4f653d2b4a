"""The fedsec Flower ClientApp (Message API): one node's client role, built from the run and node config.

``partition-id`` and ``num-partitions`` come from the node config (set by the
simulation engine, or by ``flower-supernode --node-config`` in deployment);
``role`` may come from the node config too and defaults to the scenario's
``roles`` map (``benign`` where it names none).  Each train or evaluate message
builds the node's ``NumPyClient`` and runs it through :mod:`clients.adapter`;
the server's ``partition-id`` query is answered from the node config alone.
"""

from __future__ import annotations

import torch
from flwr.app import Context, Message
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from clients import build_client, role_of
from clients.adapter import evaluate_reply, partition_reply, train_reply
from fedsec.config import RunConfig
from fedsec.errors import ConfigError

app = ClientApp()


def node_partition(context: Context) -> tuple[int, int]:
    """``(partition-id, num-partitions)`` from the node config."""
    node = context.node_config
    try:
        partition_id = int(node["partition-id"])
        num_partitions = int(node["num-partitions"])
    except KeyError as missing:
        raise ConfigError(
            f"node config lacks {missing}; start SuperNodes with "
            '--node-config "partition-id=<i> num-partitions=<n>"'
        ) from None
    return partition_id, num_partitions


def node_config(context: Context) -> RunConfig:
    """The run config as this node sees it (``num-clients=0`` means every partition of the federation)."""
    config = RunConfig.from_run_config(context.run_config)
    _, num_partitions = node_partition(context)
    if config.num_clients == 0:
        config = config.replace(num_clients=num_partitions)
    return config


def node_client(context: Context) -> NumPyClient:
    """Build this node's client from the run config and the node config."""
    config = node_config(context)
    torch.set_num_threads(config.torch_threads)
    partition_id, num_partitions = node_partition(context)
    role = role_of(
        config,
        partition_id=partition_id,
        num_partitions=num_partitions,
        node_role=str(context.node_config.get("role", "")),
    )
    return build_client(
        config, partition_id=partition_id, num_partitions=num_partitions, role=role, state=context.state
    )


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Local training of this node's client role."""
    return train_reply(node_client(context), msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Local evaluation of the global model on this node's held-out part."""
    return evaluate_reply(node_client(context), msg)


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Answer the server's ``partition-id`` query (its seeded sampler orders nodes by it)."""
    partition_id, _ = node_partition(context)
    return partition_reply(partition_id, msg)
