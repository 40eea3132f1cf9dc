"""`make bench`: every benchmark in one run on this machine, then the summary and plots.

Brings up the real appliance under its own compose project, ports, model name and home, and
measures, in this order: the `onebox` command's start-up and an embedded training run
(benchmarks/cli.py, no Docker); importing 20,000 photos (benchmarks/dataset_import.py, no Docker
either); training throughput and a large dataset's memory (benchmarks/training.py, no Docker); cold
`up`; registered -> serving and failed requests during a swap under load; idle memory; serving side
by side (benchmarks/serving.py); the prediction log on vs off (benchmarks/prediction_log.py); torch vs ONNX Runtime
(benchmarks/runtimes.py); the flow against the plain script (benchmarks/pipeline.py). Each
result is written to benchmarks/results/*.json as soon as it is measured; the stack is torn
down at the end; benchmarks/report.py writes summary.md, the plots and README's table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.servers import isolated_appliance_environment

RESULTS = Path(__file__).resolve().parent / "results"


def configure() -> None:
    os.environ.update(isolated_appliance_environment("bench", Path(tempfile.mkdtemp(prefix="onebox-bench-"))))


def write(name: str, results: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"-> benchmarks/results/{name}.json")


STAGES = ("cli", "dataset_import", "training", "appliance", "serving", "prediction_log", "runtimes", "pipeline")
# Measured on the appliance's served model: they bring up the appliance (and measure it) first.
ON_THE_APPLIANCE = {"appliance", "serving", "prediction_log", "runtimes", "pipeline"}


def parse_stages(argv: list[str] | None = None) -> set[str]:
    """The stages to run: all, or those ``--only`` names (comma-separated)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(STAGES), help=f"comma-separated, of: {', '.join(STAGES)}")
    chosen = {name.strip() for name in parser.parse_args(argv).only.split(",") if name.strip()}
    if unknown := sorted(chosen - set(STAGES)):
        parser.error(f"unknown stage {', '.join(unknown)}; the stages are {', '.join(STAGES)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    stages = parse_stages(argv)
    configure()
    from flows.environment import prepare_environment
    from storage.settings import get_settings

    settings = get_settings()
    prepare_environment(settings)
    from benchmarks import appliance, cli, dataset_import, pipeline, prediction_log, report, runtimes, serving, training
    from serving.compose import ComposeRuntime
    from serving.image_builds import remove_model_images

    started = time.perf_counter()
    header = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    runtime = ComposeRuntime(settings)
    if "cli" in stages:
        write("cli", cli.measure_cli())  # first: the appliance's containers would load the machine
    if "dataset_import" in stages:
        write("dataset_import", dataset_import.measure_import())  # no Docker either
    if "training" in stages:
        write("training", {**header, "throughput": training.measure_throughput(), "memory": training.measure_memory()})
    if not stages & ON_THE_APPLIANCE:
        report.main()
        return 0
    swap_ok = True
    try:
        results = {**header, **appliance.measure_cold_up(settings, runtime)}
        results.update(appliance.measure_swap(settings, runtime))
        swap_ok = results["swap_requests_failed"] == 0
        results.update(appliance.measure_idle_memory(runtime))
        results.update(appliance.measure_second_model_memory(settings, runtime, results))
        write("appliance", results)
        name, version, run_id = results["serving_model"], results["serving_version"], results["serving_run_id"]

        if "serving" in stages:
            write("serving", serving.measure_serving(settings, name, version, run_id))
        from storage.registry import materialize_bundle

        bundle = materialize_bundle(settings, name, version)
        if "prediction_log" in stages:
            write("prediction_log", prediction_log.measure_prediction_log(bundle, workers=settings.serve_workers))
        if "runtimes" in stages:
            with tempfile.TemporaryDirectory(prefix="onebox-bench-torch-") as folder:
                torch_model = serving.write_torch_model(settings, run_id, Path(folder))
                write("runtimes", {**header, **runtimes.measure_runtimes(settings, name, version, torch_model)})
        if "pipeline" in stages:
            write("pipeline", {**header, **pipeline.measure_pipeline(settings)})
    finally:
        _drain_prefect()
        runtime.down(volumes=True)
        remove_model_images(settings)
    print(f"\nthe suite took {(time.perf_counter() - started) / 60:.1f} min")
    report.main()
    if not swap_ok:
        print("the swap had FAILED requests")
    return 0 if swap_ok else 1


def _drain_prefect() -> None:
    """Send the flow runs' last logs and events while the stack's Prefect server still answers."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)
    EventsWorker.drain_all(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
