"""Reproducible client sampling: a Flower ``ClientManager`` that draws from the run seed.

Flower's ``SimpleClientManager.sample`` draws with Python's global, unseeded
``random`` module over node ids, which the simulation engine itself draws at
random; two runs with the same seed therefore train different clients in every
round once ``fraction-fit < 1``.  :class:`SeededClientManager` fixes both:

* it orders the available clients by their ``partition-id`` (asked once per
  node with Flower's ``get_properties`` and cached; every fedsec client reports
  it), not by node id;
* its ``n``-th call to :meth:`~SeededClientManager.sample` (``n = 0, 1, …``;
  one per round, plus one more when ``fraction-evaluate > 0``) draws from
  ``random.Random(derive_seed(seed, SAMPLING_STREAM, n))``.

With ``malicious_per_round`` it also stratifies, as PDGAN's "three adversaries
per round": exactly that many of the round's clients come from the scenario's
malicious partitions and the rest from the benign ones.  That uses the
scenario's ground truth, so it is an experiment control, not a defense.

When every available client is requested (``fraction-fit = 1``) nothing is
asked or drawn: all of them are returned.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor

from flwr.common import GetPropertiesIns
from flwr.server import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.criterion import Criterion

from fedsec.experiment import derive_seed
from strategies.wrapper import integer_partition, partition_order

__all__ = ["SAMPLING_STREAM", "SeededClientManager", "partition_of"]

logger = logging.getLogger(__name__)

#: Seed stream of the per-round client sample.
SAMPLING_STREAM = 0x5A3F


def partition_of(proxy: ClientProxy, *, timeout: float | None = None) -> int | None:
    """The ``partition-id`` the client behind ``proxy`` reports, or ``None`` if it reports none."""
    try:
        res = proxy.get_properties(GetPropertiesIns(config={}), timeout=timeout, group_id=None)
    except (ValueError, RuntimeError, TimeoutError, ConnectionError) as error:  # then ordered by node id
        logger.warning("client %s did not report its partition-id: %s", proxy.cid, error)
        return None
    value = res.properties.get("partition-id")
    partition = integer_partition(value)
    if partition is None:
        logger.warning("client %s reported no integer partition-id (got %r)", proxy.cid, value)
    return partition


class SeededClientManager(SimpleClientManager):
    """``SimpleClientManager`` whose :meth:`sample` is a pure function of the seed and the call count.

    Parameters
    ----------
    seed
        The run seed.
    malicious
        Partition ids (as strings, like :class:`~strategies.wrapper.GroundTruth`)
        of the scenario's malicious clients; only used with ``malicious_per_round``.
    malicious_per_round
        If set (>= 0), every sample that is smaller than the available pool
        holds exactly this many malicious clients.
    timeout
        Seconds to wait for a client's ``get_properties`` reply (``None``: no limit).
    """

    def __init__(
        self,
        *,
        seed: int,
        malicious: Collection[str] = (),
        malicious_per_round: int | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        if malicious_per_round is not None and (
            isinstance(malicious_per_round, bool)
            or not isinstance(malicious_per_round, int)
            or malicious_per_round < 0
        ):
            raise ValueError(
                f"malicious_per_round must be None or an integer >= 0, got {malicious_per_round!r}"
            )
        self.seed = seed
        self.malicious = frozenset(str(m) for m in malicious)
        self.malicious_per_round = malicious_per_round
        self.timeout = timeout
        self._partitions: dict[str, int | None] = {}
        self._draws = 0
        self._lock = threading.Lock()

    def _resolve(self, cids: list[str]) -> dict[str, int | None]:
        """Partition id of every cid in ``cids`` (asked concurrently for the ones not cached yet)."""
        unknown = [cid for cid in cids if cid not in self._partitions]
        if unknown:
            logger.info("asking %s clients for their partition-id", len(unknown))
            with ThreadPoolExecutor(max_workers=min(32, len(unknown))) as pool:
                proxies = [self.clients[cid] for cid in unknown]
                found = list(pool.map(lambda proxy: partition_of(proxy, timeout=self.timeout), proxies))
            self._partitions.update(zip(unknown, found, strict=True))
        return {cid: self._partitions[cid] for cid in cids}

    def _ordered(self, cids: list[str]) -> list[str]:
        """``cids`` sorted by partition id; clients without one go last, by node id."""
        partitions = self._resolve(cids)
        return sorted(cids, key=lambda cid: partition_order(partitions[cid], cid))

    def sample(
        self,
        num_clients: int,
        min_num_clients: int | None = None,
        criterion: Criterion | None = None,
    ) -> list[ClientProxy]:
        """``num_clients`` clients drawn from the seed (all of them if that many are available)."""
        if min_num_clients is None:
            min_num_clients = num_clients
        self.wait_for(min_num_clients)
        available = [cid for cid in self.clients if criterion is None or criterion.select(self.clients[cid])]
        if num_clients > len(available):
            logger.info(
                "Sampling failed: %s clients available, %s requested",
                len(available),
                num_clients,
            )
            return []
        if num_clients == len(available):
            return [self.clients[cid] for cid in available]

        with self._lock:
            ordered = self._ordered(available)
            draw = self._draws
            self._draws += 1
        rng = random.Random(derive_seed(self.seed, SAMPLING_STREAM, draw))
        if self.malicious_per_round is None:
            chosen = rng.sample(ordered, num_clients)
        else:
            chosen = self._stratified(ordered, num_clients, rng)
        return [self.clients[cid] for cid in chosen]

    def _stratified(self, ordered: list[str], num_clients: int, rng: random.Random) -> list[str]:
        """``malicious_per_round`` malicious clients and the rest benign (fewer if too few are left)."""
        assert self.malicious_per_round is not None
        bad = [cid for cid in ordered if str(self._partitions[cid]) in self.malicious]
        good = [cid for cid in ordered if str(self._partitions[cid]) not in self.malicious]
        k = min(self.malicious_per_round, len(bad), num_clients)
        k = max(k, num_clients - len(good))  # too few benign clients left: fill with malicious ones
        if k != self.malicious_per_round:
            logger.warning(
                "malicious-per-round=%s cannot be met from %s malicious and %s benign available clients; "
                "sampling %s malicious",
                self.malicious_per_round,
                len(bad),
                len(good),
                k,
            )
        return rng.sample(bad, k) + rng.sample(good, num_clients - k)
