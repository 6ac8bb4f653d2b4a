"""The fedsec Flower ClientApp: picks the client for this node and runs it.

``partition-id`` and ``num-partitions`` come from the node config (set by the
simulation engine, or by ``flower-supernode --node-config`` in deployment);
``role`` may come from the node config too and defaults to ``benign``.
"""

from __future__ import annotations

import torch
from flwr.client import Client, ClientApp
from flwr.common import Context

from clients import build_client, role_of
from fedsec.config import RunConfig


def client_fn(context: Context) -> Client:
    """Build this node's client from the run config and the node config."""
    config = RunConfig.from_run_config(context.run_config)
    torch.set_num_threads(config.torch_threads)
    node = context.node_config
    try:
        partition_id = int(node["partition-id"])
        num_partitions = int(node["num-partitions"])
    except KeyError as missing:
        raise ValueError(
            f"node config lacks {missing}; start SuperNodes with "
            '--node-config "partition-id=<i> num-partitions=<n>"'
        ) from None
    role = role_of(
        config, partition_id=partition_id, num_partitions=num_partitions, node_role=str(node.get("role", ""))
    )
    return build_client(
        config, partition_id=partition_id, num_partitions=num_partitions, role=role, state=context.state
    ).to_client()


app = ClientApp(client_fn=client_fn)
