"""An empty Flower App: Flower's FedAvg, and clients that send back the arrays they receive.

``fedsec bench`` runs it through ``flwr run`` on the same simulation federation
as the fedsec round it measures, with one float32 array of the model's size:
its steady round is what Flower's engine (dispatch, Ray calls, message
transport) costs a round with no training, no client to build, no guard and no
evaluation.  The server collects replies with fedsec's
:class:`~strategies.grids.PollingGrid`, as fedsec's ServerApp does, so the
difference to a fedsec round is fedsec's own work.  The run config names the
array's size (``parameters``), the rounds and the directory (``out-dir``) where
the server writes ``summary.json``: each round's seconds (the launcher reads
a ``summary.json`` as the sign that a run's server is done).
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from strategies.grids import PollingGrid

server = ServerApp()
client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    """Reply with the received arrays, as one example's update."""
    content = RecordDict({"arrays": msg.content["arrays"], "metrics": MetricRecord({"num-examples": 1})})
    return Message(content=content, reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    """Run the rounds with Flower's FedAvg and write each round's seconds to ``out-dir/summary.json``."""
    config = context.run_config
    nodes = len(list(grid.get_node_ids()))
    arrays = ArrayRecord([np.zeros(int(config["parameters"]), dtype=np.float32)])
    ends: list[float] = []

    def round_end(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        ends.append(time.perf_counter())
        return None

    FedAvg(fraction_evaluate=0.0, min_train_nodes=nodes, min_available_nodes=nodes).start(
        grid=PollingGrid(grid),
        initial_arrays=arrays,
        num_rounds=int(config["num-server-rounds"]),
        evaluate_fn=round_end,
    )
    seconds = [b - a for a, b in itertools.pairwise(ends)]
    summary = {"status": "completed", "nodes": nodes, "round_seconds": seconds}
    (Path(str(config["out-dir"])) / "summary.json").write_text(json.dumps(summary))
