"""A plain Message-API ClientApp: least squares on local data; partition 2 attacks, 3 sends NaN."""

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

TRUE_WEIGHTS = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
app = ClientApp()


def local_data(partition: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(partition)
    x = rng.normal(size=(100, 4)).astype(np.float32)
    return x, x @ TRUE_WEIGHTS


@app.train()
def train(msg: Message, context: Context) -> Message:
    partition = int(context.node_config["partition-id"])
    (weights,) = msg.content["arrays"].to_numpy_ndarrays()
    x, y = local_data(partition)
    if partition == 2:
        y = -y  # the attacker pulls towards the opposite model ...
    start = weights.copy()
    for _ in range(20):
        weights = weights - 0.05 * x.T @ (x @ weights - y) / len(y)
    if partition == 2:
        weights = start + 10.0 * (weights - start)  # ... and boosts its update tenfold
    if partition == 3:
        weights = np.full_like(weights, np.nan)
    metrics = MetricRecord({"num-examples": len(y), "partition-id": partition})
    return Message(
        RecordDict({"arrays": ArrayRecord([weights.astype(np.float32)]), "metrics": metrics}), reply_to=msg
    )
