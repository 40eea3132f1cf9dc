"""Orchestration overhead: the training flow through Prefect + MLflow against the plain script.

Same data, epochs and seed, and the same work (benchmarks/baselines/plain_pipeline.py: train,
evaluate, export and check, score the previous model, render the report); both in this process
after a warm-up (imports, the first Adam step), alternating, the median of each. The flow runs
against the appliance's Prefect and MLflow servers, as `onebox train` does when the appliance
is up, and does not deploy (a swap is measured by benchmarks/appliance.py).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.baselines.plain_pipeline import run_plain_pipeline
from storage.settings import Settings

EPOCHS = 15
REPEATS = 5


def _seconds(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def measure_pipeline(settings: Settings, *, epochs: int = EPOCHS, repeats: int = REPEATS) -> dict[str, Any]:
    from flows.pipeline import training_pipeline

    plain_s: list[float] = []
    flow_s: list[float] = []
    with tempfile.TemporaryDirectory(prefix="onebox-bench-plain-") as folder:
        previous = Path(folder) / "warm-up"
        run_plain_pipeline(settings, out_dir=previous, epochs=1, seed=0)
        training_pipeline(epochs=1, seed=0, deploy=False)  # the flow's first run imports MLflow's flavors
        for seed in range(100, 100 + repeats):
            out_dir = Path(folder) / str(seed)
            plain_run = partial(
                run_plain_pipeline,
                settings,
                out_dir=out_dir,
                epochs=epochs,
                seed=seed,
                previous_model=previous / "model.onnx",
            )
            plain_s.append(_seconds(plain_run))
            previous = out_dir
            flow_s.append(_seconds(partial(training_pipeline, epochs=epochs, seed=seed, deploy=False)))
            print(f"pipeline, seed {seed}: plain script {plain_s[-1]:.1f} s, Prefect + MLflow flow {flow_s[-1]:.1f} s")
    plain, flow = statistics.median(plain_s), statistics.median(flow_s)
    return {
        "epochs": epochs,
        "repeats": repeats,
        "plain_script_s": [round(s, 2) for s in plain_s],
        "flow_s": [round(s, 2) for s in flow_s],
        "plain_script_median_s": round(plain, 2),
        "flow_median_s": round(flow, 2),
        "flow_vs_plain": round(flow / plain, 2),
        "flow_overhead_s": round(flow - plain, 2),
    }
