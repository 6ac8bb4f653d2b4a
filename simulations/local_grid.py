"""A Flower ``Grid`` whose nodes are Python callables in this process (no SuperLink, no Ray).

``LocalGrid({node_id: handler})`` delivers every message to its node's handler
when it is pushed and hands the reply out on the next pull; a handler that raises becomes an error reply, as
Flower's engines report a crashed ClientApp.  ``strategy.start(grid=LocalGrid(...))``
therefore runs Flower's own round loop against real client code; the bench
times aggregation on it and the tests drive whole federations with it.
Flower stamps messages with the identity of the run they belong to:
:func:`set_local_identity` gives this process one when no Flower run did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any
from uuid import uuid4

from flwr.app import Error, Message, MetricRecord, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from fedsec.protocol import METRICS_KEY, PARTITION_KEY

__all__ = ["Handler", "LocalGrid", "partition_handler", "set_local_identity"]

#: A node: turns the message it receives into its reply.
Handler = Callable[[Message], Message]


def set_local_identity(run_id: int = 1) -> None:
    """Give this process the task identity Flower needs to create messages (outside a Flower run)."""
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, 1, 1


def partition_handler(partition: object) -> Handler:
    """A node that answers every message with ``partition-id = partition`` (``None``: reports none)."""

    def handle(msg: Message) -> Message:
        record = MetricRecord({} if partition is None else {PARTITION_KEY: partition})  # type: ignore[dict-item]
        return Message(content=RecordDict({METRICS_KEY: record}), reply_to=msg)

    return handle


class LocalGrid(Grid):
    """A grid of in-process nodes ``{node_id: handler}``; ``sent`` lists every delivered message in order."""

    def __init__(self, nodes: Mapping[int, Handler]) -> None:
        self.nodes = dict(nodes)
        self.sent: list[Message] = []
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Any) -> None:
        raise NotImplementedError("a LocalGrid belongs to no Flower run")

    @property
    def run(self) -> Any:
        raise NotImplementedError("a LocalGrid belongs to no Flower run")

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(
            content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl
        )

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message to its node at once (stamping a message id, as Flower's grids do)."""
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid4())
            self.sent.append(msg)
            self._replies[msg.metadata.message_id] = self._answer(msg)
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """The replies to ``message_ids`` (each handed out once), in the order given."""
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        return list(self.pull_messages(list(self.push_messages(messages))))

    def _answer(self, msg: Message) -> Message:
        handler = self.nodes[msg.metadata.dst_node_id]
        try:
            return handler(msg)
        except Exception as error:  # noqa: BLE001 - a raising node is an error reply, as in Flower
            reason = f"{type(error).__name__}: {error}"
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)

    def count(self, message_type: str) -> int:
        """How many messages of ``message_type`` were delivered."""
        return sum(1 for msg in self.sent if msg.metadata.message_type.split(".")[0] == message_type)
