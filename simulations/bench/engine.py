"""Flower's engine alone: the round of an empty Flower App on the federation a fedsec round ran on.

The app in ``engine_app/`` is Flower's FedAvg with clients that send back the
one float32 array (of the model's size) they receive: no training, no client to
build, no guard, no evaluation.  Its steady round is what the simulation engine
itself costs a round at that many clients (its 0.1 s look for new messages, a
Ray call per message, the transport of the arrays), so a fedsec round can come
no nearer its compute floor than ``floor + engine round``; what fedsec's round
spends beyond its clients' ``fit()`` and the engine round is fedsec's own work
(the ClientApp building its client per message, the guard, the aggregation, the
evaluation, the checkpoint) and the actors' uneven shares of the clients.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from fedsec.bench import steady_round_seconds
from simulations import launcher
from simulations.flower_session import FlowerSession
from simulations.processes import LaunchError

__all__ = ["ENGINE_APP", "EngineRound", "engine_round"]

#: The empty Flower App (its own ``pyproject.toml``; ``flwr run`` packages it like any app).
ENGINE_APP = Path(__file__).resolve().with_name("engine_app")


@dataclass(frozen=True)
class EngineRound:
    """One run of the empty app: its status, every round's seconds and the steady rounds' median."""

    status: str
    round_seconds: tuple[float, ...]

    @property
    def steady_seconds(self) -> float | None:
        """The median seconds of rounds 2 and later (round 1 carries the actors' start), or None."""
        records = [{"round": i, "seconds": s} for i, s in enumerate(self.round_seconds, start=1)]
        return steady_round_seconds(records)[1]


def engine_round(
    out: Path, *, clients: int, parameters: int, rounds: int, timeout: float = 600.0
) -> EngineRound:
    """Run the empty app for ``rounds`` rounds on ``clients`` simulated nodes with ``parameters`` floats.

    ``out`` (emptied first) receives the run's logs and the server's ``summary.json``.
    A run that fails or does not finish within ``timeout`` seconds is returned with
    ``status`` saying why and no rounds.
    """
    if clients < 1 or parameters < 1 or rounds < 2:
        raise ValueError(
            f"need clients >= 1, parameters >= 1, rounds >= 2; got {clients}, {parameters}, {rounds}"
        )
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    run_config = f"num-server-rounds={rounds} parameters={parameters} out-dir='{out}'"
    with FlowerSession(simulation=True, log_dir=out / "logs") as session:
        try:
            session.start_superlink()
            run_id = launcher.submit(
                session, ENGINE_APP, run_config, federation_config=launcher.simulation_federation(clients)
            )
            launcher.wait_for_run(session, run_id, out, timeout=timeout)
        except LaunchError as error:
            return EngineRound(f"failed: {error}", ())
    summary = json.loads((out / "summary.json").read_text())
    return EngineRound("ok", tuple(float(s) for s in summary["round_seconds"]))
