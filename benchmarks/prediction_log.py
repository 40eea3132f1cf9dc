"""The prediction log's cost: one model served twice, the log on and the log off, side by side.

Both are ``bentoml serve`` of the same bundle with the same worker count; they are loaded in
turns (ROUNDS times per connection count, each figure the median of its rounds) with the same
upload, so other load on the machine shifts both alike. Reported per connection count: requests/s,
p50/p99 and the servers' CPU per request (all their processes, the writer threads included), and
the ratio on/off; afterwards, whether every answered request of the log-on server has its record
on disk (the queue bound was never reached: no record may be missing).

The load repeats one image, so the log keeps it once and touches it per request; a second,
in-process figure is the writer's CPU per record when every input is new (a file each).

``python -m benchmarks.prediction_log`` serves a generated bundle (the digits' shape, a 64-wide
embedding, no training); `make bench` passes the appliance's trained model instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks import servers
from benchmarks.cpu import cpu_seconds, process_tree
from benchmarks.loadgen import Body, LoadResult, describe, ensure_wrk, run_load
from serving.log_settings import LOG_DIR_VARIABLE, PredictionLogConfig
from serving.metadata import METADATA_FILE, MODEL_DIR_VARIABLE, WORKERS_VARIABLE, ModelMetadata
from serving.waiting import NotYet, wait_for
from storage.prediction_log import read_records
from storage.settings import env_name

CONNECTIONS = (8, 64)
ROUNDS = 3
SECONDS = 3.0
WARM_UP_SECONDS = 1.0
RESULTS = Path(__file__).resolve().parent / "results" / "prediction_log.json"


def generated_bundle(folder: Path) -> Path:
    """A digits-shaped bundle with an embedding output: flatten, dense 64 (the embedding), ReLU, dense 10."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    first = rng.normal(0, 0.1, (64, 64)).astype(np.float32)
    second = rng.normal(0, 0.1, (64, 10)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["images"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "first"], ["embedding"]),
            helper.make_node("Relu", ["embedding"], ["hidden"]),
            helper.make_node("MatMul", ["hidden", "second"], ["logits"]),
        ],
        "bench",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 64]),
        ],
        initializer=[numpy_helper.from_array(first, "first"), numpy_helper.from_array(second, "second")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    classes = tuple(str(digit) for digit in range(10))
    ModelMetadata("bench", "1", "run-bench", "bench-data", "1", classes, (1, 8, 8)).write(folder / METADATA_FILE)
    return folder


def upload_body(pixels: np.ndarray) -> Body:
    from benchmarks.serving import encode_png

    request = httpx.Request("POST", "http://x/", files={"image": ("digit.png", encode_png(pixels), "image/png")})
    return Body(request.read(), request.headers["content-type"])


def _row(measured: list[LoadResult], cpu_ms: list[float]) -> dict[str, Any]:
    return {
        "requests": sum(m.requests for m in measured),
        "errors": sum(m.errors for m in measured),
        "rps": round(statistics.median(m.rps for m in measured), 1),
        "p50_ms": round(statistics.median(m.p50_ms for m in measured), 2),
        "p99_ms": round(statistics.median(m.p99_ms for m in measured), 2),
        "server_cpu_ms_per_request": round(statistics.median(cpu_ms), 3),
    }


def measure_prediction_log(
    bundle: Path,
    *,
    workers: int = 1,
    rounds: int = ROUNDS,
    seconds: float = SECONDS,
    connection_counts: tuple[int, ...] = CONNECTIONS,
) -> dict[str, Any]:
    """Log on vs off over HTTP at 8 and 64 connections, and the on-server's records against its answers."""
    wrk = ensure_wrk()
    pixels = np.random.default_rng(1).integers(0, 256, (1, 8, 8), dtype=np.uint8)
    body = upload_body(pixels)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{os.uname().machine}, {os.cpu_count()} cores",
        "model": str(ModelMetadata.read(bundle / METADATA_FILE).model_name),
        "worker_processes": workers,
        "load_generator": describe(wrk),
        "seconds_per_run": seconds,
        "rounds": rounds,
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="onebox-bench-log-") as folder_name, ExitStack() as running:
        folder = Path(folder_name)
        predictions = folder / "predictions"
        common = {MODEL_DIR_VARIABLE: str(bundle), WORKERS_VARIABLE: str(workers), "BENTOML_DO_NOT_TRACK": "true"}
        environments = {
            "log-on": {**common, LOG_DIR_VARIABLE: str(predictions), env_name("prediction_log"): "true"},
            "log-off": {**common, env_name("prediction_log"): "false"},
        }
        urls, leaders = {}, {}
        for name, environment in environments.items():
            port = servers.free_port()
            urls[name] = f"http://127.0.0.1:{port}"
            leaders[name] = running.enter_context(
                servers.server_process(
                    name,
                    servers.bento_command(port),
                    env=environment,
                    probe_url=f"{urls[name]}/predict",
                    probe=body,
                    log_dir=folder,
                )
            ).pid
        answered = 1  # the probe
        for connections in connection_counts:
            measured: dict[str, list[LoadResult]] = {name: [] for name in environments}
            cpu_ms: dict[str, list[float]] = {name: [] for name in environments}
            for _ in range(rounds):
                for name in environments:
                    warm = run_load(
                        wrk, f"{urls[name]}/predict", body, connections=connections, seconds=WARM_UP_SECONDS
                    )
                    processes = process_tree(leaders[name])
                    before = cpu_seconds(processes)
                    result = run_load(wrk, f"{urls[name]}/predict", body, connections=connections, seconds=seconds)
                    cpu_ms[name].append((cpu_seconds(processes) - before) * 1000 / max(1, result.requests))
                    measured[name].append(result)
                    if name == "log-on":
                        answered += warm.requests - warm.errors + result.requests - result.errors
            on, off = _row(measured["log-on"], cpu_ms["log-on"]), _row(measured["log-off"], cpu_ms["log-off"])
            cpu_ratio = on["server_cpu_ms_per_request"] / off["server_cpu_ms_per_request"]
            results["runs"].append(
                {
                    "connections": connections,
                    "log_on": on,
                    "log_off": off,
                    "cpu_per_request_on_vs_off": round(cpu_ratio, 3),
                    "rps_on_vs_off": round(on["rps"] / off["rps"], 3),
                }
            )
            print(f"c={connections}: on {on} | off {off}")
        stats = wait_for(
            partial(_all_written, urls["log-on"]), timeout_s=60, what="the log-on server's writer to catch up"
        )
        on_disk = len(read_records(predictions, results["model"]))
    results["records"] = {
        # wrk counts the answers it read; the server may have answered a few more as wrk stopped.
        "answered_at_least": answered,
        "on_disk": on_disk,
        "missing": max(0, answered - on_disk),
        "dropped": stats["dropped"],
        "queue_bound": stats["queue_bound"],
        # The writer thread's own share of the log-on server's CPU per request.
        "writer_cpu_ms_per_record": round(stats["writer_cpu_s"] * 1000 / max(1, stats["written"]), 3),
    }
    results["writer_unique_inputs"] = measure_writer(bundle)
    return results


def _all_written(url: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{url}/metadata").json()["prediction_log"]
    if stats["queued"]:
        raise NotYet(f"{stats['queued']} records queued")
    return stats


def measure_writer(bundle: Path, records: int = 2000) -> dict[str, Any]:
    """The writer thread's CPU per record when every input is new (a PNG upload, a file each)."""
    from benchmarks.serving import encode_png
    from serving.prediction_log import PredictionLog

    meta = ModelMetadata.read(bundle / METADATA_FILE)
    rng = np.random.default_rng(2)
    uploads = [encode_png(rng.integers(0, 256, (1, 8, 8), dtype=np.uint8)) for _ in range(records)]
    probabilities = np.full((1, 10), 0.1, np.float32)
    embedding = rng.normal(size=(1, 64)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="onebox-bench-writer-") as folder:
        config = PredictionLogConfig(directory=Path(folder), prediction_log_queue=records)
        log = PredictionLog(config, {meta.model_name: meta}).start()
        started = time.thread_time(), time.process_time()
        for index, data in enumerate(uploads):
            log.submit_upload(meta.model_name, f"r{index}", data, probabilities, embedding)
        submit_cpu = time.thread_time() - started[0]
        log.flush(timeout_s=120)
        total_cpu = time.process_time() - started[1]
        log.close()
        written = log.counts[meta.model_name].written
    return {
        "records": records,
        "written": written,
        "submit_us_per_record": round(submit_cpu / records * 1e6, 1),  # the request path's share
        "writer_us_per_record": round((total_cpu - submit_cpu) / records * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="a model bundle (default: a generated one)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--connections", type=int, nargs="+", default=list(CONNECTIONS))
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="onebox-bench-bundle-") as folder:
        bundle = arguments.bundle or generated_bundle(Path(folder) / "bundle")
        results = measure_prediction_log(
            bundle,
            workers=arguments.workers,
            rounds=arguments.rounds,
            seconds=arguments.seconds,
            connection_counts=tuple(arguments.connections),
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"-> {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")


if __name__ == "__main__":
    main()
