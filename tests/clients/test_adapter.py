"""The adapter turns a train message into a NumPyClient's fit and back, timing the fit."""

import time

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.client import NumPyClient

from clients.adapter import train_reply


class Slow(NumPyClient):
    """Adds one to every array after 50 ms."""

    def fit(self, parameters, config):
        time.sleep(0.05)
        return [p + 1 for p in parameters], 7, {"loss": 0.5, "note": "not a number"}


def test_a_train_reply_carries_the_fit_its_seconds_and_only_numeric_metrics():
    arrays = [np.zeros((2, 2), np.float32), np.ones(3, np.float32)]
    content = RecordDict({"arrays": ArrayRecord(arrays), "config": ConfigRecord({"server-round": 1})})
    msg = Message(content=content, dst_node_id=1, message_type="train")
    started = time.perf_counter()
    reply = train_reply(Slow(), msg)
    elapsed = time.perf_counter() - started
    metrics = reply.content["metrics"]
    assert 0.05 <= metrics["fit-seconds"] <= elapsed
    assert metrics["num-examples"] == 7 and metrics["loss"] == 0.5 and "note" not in metrics
    np.testing.assert_array_equal(reply.content["arrays"].to_numpy_ndarrays()[1], np.full(3, 2.0))
