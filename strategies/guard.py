"""A wrapper that screens every client update before the inner strategy sees it.

Every fedsec strategy is wrapped in :class:`GuardedStrategy` (the registry does
it), the way Flower wraps strategies for differential privacy.  Per round it

* decodes each client's parameters and rejects those that are malformed
  (undecodable bytes, wrong number of arrays, wrong shape or dtype, NaN/Inf:
  :func:`fedsec.validation.screen_update`) with a logged reason;
* counts clients that failed (exceptions, timeouts, error replies);
* passes only well-formed results to the inner strategy, in a fixed order (by
  ``partition-id``, then node id), so that the floating-point sums of the
  aggregation do not depend on the order in which the engine delivered them
  (Ray's changes from run to run); and if the inner
  aggregation itself raises (e.g. Bulyan with too few clients left) keeps the
  previous global model for the round instead of ending the run;
* writes every decision into the run record.
"""

from __future__ import annotations

import logging

from flwr.common import FitIns, FitRes, NDArrays, Parameters, Scalar, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from fedsec.results import RunRecorder
from fedsec.validation import ArraySpec, layout_of, screen_update
from strategies.wrapper import Failures, FitResults, StrategyWrapper, client_label, partition_order

logger = logging.getLogger(__name__)

__all__ = ["GuardedStrategy", "client_label"]


class GuardedStrategy(StrategyWrapper):
    """Screen updates for ``inner`` and record what was rejected and why.

    Parameters
    ----------
    inner
        Any Flower strategy; it aggregates what the guard keeps.
    recorder
        Where per-round decisions go; ``None`` only logs them.
    """

    def __init__(self, *, inner: Strategy, recorder: RunRecorder | None = None) -> None:
        super().__init__(inner=inner)
        self.recorder = recorder
        self._layout: tuple[ArraySpec, ...] | None = None

    def __repr__(self) -> str:
        return f"GuardedStrategy({self.inner!r})"

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        parameters = super().initialize_parameters(client_manager)
        if self.global_arrays is not None:
            self._layout = layout_of(self.global_arrays)
        return parameters

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        instructions = super().configure_fit(server_round, parameters, client_manager)
        assert self.global_arrays is not None
        self._layout = layout_of(self.global_arrays)
        return instructions

    # ------------------------------------------------------------- screening
    def screen(self, server_round: int, results: FitResults, failures: Failures) -> FitResults:
        """Return the well-formed results; log and record the rest and the failures."""
        if self._layout is None:
            raise RuntimeError("configure_fit must run before aggregate_fit (no model layout yet)")
        kept: FitResults = []
        rejected: dict[str, str] = {}
        for proxy, res in results:
            label = client_label(proxy, res)
            reason = _decode_and_screen(res, self._layout)
            if reason is None:
                kept.append((proxy, res))
            else:
                rejected[label] = reason
                logger.warning("round %s: rejected update from client %s: %s", server_round, label, reason)
        for failure in failures:
            logger.warning("round %s: client failure: %s", server_round, _describe_failure(failure))
        kept.sort(key=_delivery_independent_order)
        if self.recorder is not None:
            self.recorder.note(
                server_round,
                received=len(results),
                failures=len(failures),
                rejected=rejected,
            )
        return kept

    def aggregate_fit(
        self, server_round: int, results: FitResults, failures: Failures
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        kept = self.screen(server_round, results, failures)
        if not kept:
            logger.warning("round %s: no well-formed update; keeping the previous model", server_round)
            return None, {}
        try:
            return self.inner.aggregate_fit(server_round, kept, failures)
        except (ValueError, ArithmeticError, IndexError) as error:
            logger.error(
                "round %s: %s could not aggregate %s updates (%s); keeping the previous model",
                server_round,
                type(self.inner).__name__,
                len(kept),
                error,
            )
            if self.recorder is not None:
                self.recorder.note(server_round, aggregation_error=f"{type(error).__name__}: {error}")
            return None, {}


def _delivery_independent_order(result: tuple[ClientProxy, FitRes]) -> tuple[int, int, str]:
    proxy, res = result
    return partition_order(res.metrics.get("partition-id"), proxy.cid)


def _decode_and_screen(res: FitRes, layout: tuple[ArraySpec, ...]) -> str | None:
    try:
        arrays: NDArrays = parameters_to_ndarrays(res.parameters)
    except Exception as error:  # noqa: BLE001 - any undecodable payload is a rejection
        return f"parameters could not be decoded ({type(error).__name__}: {error})"
    return screen_update(arrays, layout)


def _describe_failure(failure: tuple[ClientProxy, FitRes] | BaseException) -> str:
    if isinstance(failure, BaseException):
        return f"{type(failure).__name__}: {failure}"
    proxy, res = failure
    return (
        f"client {client_label(proxy, res)} replied with status {res.status.code.name}: {res.status.message}"
    )
