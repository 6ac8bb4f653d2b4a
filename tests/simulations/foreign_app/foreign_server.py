"""A plain Message-API ServerApp: Flower's FedAvg inside fedsec's layered defense inside fedsec's guard."""

import json
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedsec.results import RunRecorder
from strategies import GroundTruth, GuardedStrategy
from strategies.layered import LayeredDefense

TRUE_WEIGHTS = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    out = Path(str(context.run_config["out"]))
    recorder = RunRecorder(out_dir=out, scenario="foreign", config={})
    fedavg = FedAvg(fraction_evaluate=0.0, min_train_nodes=4, min_available_nodes=4)
    layered = LayeredDefense(inner=fedavg, recorder=recorder, truth=GroundTruth(malicious=frozenset({"2"})))
    strategy = GuardedStrategy(inner=layered, recorder=recorder)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        (weights,) = arrays.to_numpy_ndarrays()
        error = float(np.linalg.norm(weights - TRUE_WEIGHTS))
        recorder.end_round(server_round, accuracy=0.0, loss=error)
        return MetricRecord({"error": error})

    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord([np.zeros(4, np.float32)]),
        num_rounds=int(context.run_config["num-server-rounds"]),
        train_config=ConfigRecord(),
        evaluate_fn=evaluate,
    )
    (final,) = result.arrays.to_numpy_ndarrays()
    recorder.finish(final_weights=final.tolist())
    (out / "done.json").write_text(json.dumps({"final": final.tolist()}))
