"""Serving, side by side: onebox's served model against what its users would otherwise run.

One registered model version, served by
  - onebox through the appliance's gateway (nginx on the host's network -> the BentoML model container),
  - the same bento directly (``bentoml serve`` on the host),
  - the setup onebox replaces: the torch model in Flask under gunicorn (benchmarks/baselines),
  - stock ``mlflow models serve`` of the registered version (its JSON ``/invocations``),
and, as the limit, the ONNX Runtime predictor in a loop with no HTTP at all. Every server runs
the same number of worker processes; the load generator runs on loopback, bounded in time.

Two request types, compared like with like: the user-facing image upload (multipart PNG to
``/predict``; Flask's ``/predict`` takes the same upload) and one image as a JSON array (onebox's
and Flask's ``/predict_batch``, MLflow's ``/invocations`` with the normalized pixels it expects).
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks import servers
from benchmarks.cpu import cpu_seconds, process_tree
from benchmarks.loadgen import Body, LoadResult, describe, ensure_wrk, run_load
from serving.metadata import MODEL_DIR_VARIABLE, WORKERS_VARIABLE
from serving.predictor import OnnxPredictor
from storage.settings import Settings

CONNECTIONS = (1, 8, 64)
ROUNDS = 5
SECONDS = 3.0
WARM_UP_SECONDS = 1.0


@dataclass(frozen=True)
class Run:
    server: str
    request: str  # "image" or "json"
    url: str
    body: Body
    pids: Callable[[], list[int]]  # the processes that answer (for CPU per request)


def gateway_pids(settings: Settings) -> list[int]:
    """nginx and the default model's live container: everything a request goes through (the gateway
    listens on the host's network itself, no port proxy in front)."""
    from serving.compose import ComposeRuntime

    runtime = ComposeRuntime(settings)
    pids: list[int] = []
    model = runtime.state().model(runtime.default_model() or "")
    live = [model.service(model.live_color)] if model is not None and model.live_color else []
    for service in ("gateway", *live):
        container = runtime._container(service)
        if container is not None:
            pids += [int(row[0]) for row in container.top(ps_args="-o pid").get("Processes") or []]
    return pids


def digit_pixels(settings: Settings) -> np.ndarray:
    """One real test digit, uint8 (C, H, W), as the dataset stores it."""
    from flows.prepare import split_dataset
    from storage.datasets import BUILTIN_DATASET, open_images, resolve_dataset

    test = split_dataset(open_images(resolve_dataset(BUILTIN_DATASET, None, settings)), seed=0).test
    return np.asarray(test.images[0])


def encode_png(pixels: np.ndarray) -> bytes:
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)).save(png, format="PNG")
    return png.getvalue()


def request_bodies(pixels: np.ndarray) -> dict[str, Body]:
    import json

    upload = httpx.Request("POST", "http://x/", files={"image": ("digit.png", encode_png(pixels), "image/png")})
    batch = pixels[np.newaxis]
    return {
        "image": Body(upload.read(), upload.headers["content-type"]),
        "json": Body(json.dumps({"images": batch.tolist()}).encode(), "application/json"),
        # MLflow's ONNX flavor feeds the model directly: float pixels in [0, 1], as in training.
        "mlflow-json": Body(
            json.dumps({"inputs": (batch / 255.0).astype(np.float32).tolist()}).encode(), "application/json"
        ),
    }


def write_torch_model(settings: Settings, run_id: str, folder: Path) -> Path:
    """The registered run's torch model as a state-dict ``.pt``, the way a Flask server loads one."""
    import mlflow
    import torch

    from storage.registry import configure_mlflow

    configure_mlflow(settings)
    local = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/torch-model", dst_path=str(folder / "mlflow"))
    program = torch.export.load(str(next(Path(local).rglob("*.pt2"))))
    target = folder / "model.pt"
    torch.save(program.module().state_dict(), target)
    return target


def _predict_loop(bundle: str, png: bytes, seconds: float) -> tuple[int, int]:
    predictor = OnnxPredictor.from_directory(Path(bundle))
    pixels = np.zeros((1, *predictor.metadata.image_shape), np.uint8)
    counts = []
    for run in (lambda: predictor.predict_image(png), lambda: predictor.probabilities(pixels)):
        run()
        done, deadline = 0, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            run()
            done += 1
        counts.append(done)
    return counts[0], counts[1]


def in_process_limit(bundle: Path, png: bytes, *, processes: int, seconds: float = 4.0) -> dict[str, float]:
    """Single-image predictions per second with no HTTP: decode + model, and the model alone."""
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        counts = pool.starmap(_predict_loop, [(str(bundle), png, seconds)] * processes)
    return {
        "processes": processes,
        "png_decode_and_predict_per_s": round(sum(c[0] for c in counts) / seconds),
        "model_only_per_s": round(sum(c[1] for c in counts) / seconds),
    }


def measure_serving(settings: Settings, name: str, version: str, run_id: str) -> dict[str, Any]:
    """Requests/s, p50 and p99 per server and request type at 1, 8 and 64 connections.

    All servers run at once and are measured in turns, ROUNDS times per connection count, each
    figure the median of its rounds: a machine whose other load drifts during the run (a shared
    CI host) shifts every server alike instead of whichever happened to be measured then.
    """
    from storage.registry import materialize_bundle

    workers = settings.serve_workers
    bundle = materialize_bundle(settings, name, version)
    wrk = ensure_wrk()
    pixels = digit_pixels(settings)
    bodies = request_bodies(pixels)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "model": f"{name} v{version}",
        "worker_processes": workers,
        "load_generator": describe(wrk),
        "seconds_per_run": SECONDS,
        "rounds": ROUNDS,
        "runs": [],
    }
    results["in_process"] = in_process_limit(bundle, encode_png(pixels), processes=workers)
    print(f"in-process ONNX Runtime: {results['in_process']}")
    with tempfile.TemporaryDirectory(prefix="onebox-bench-serving-") as folder_name, ExitStack() as running:
        folder = Path(folder_name)
        ports = {name: servers.free_port() for name in ("bento", "flask", "mlflow")}
        url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        url["gateway"] = settings.serve_url
        url["gateway_model"] = f"{settings.serve_url}/models/{name}"
        environments = {
            "bento": {MODEL_DIR_VARIABLE: str(bundle), WORKERS_VARIABLE: str(workers), "BENTOML_DO_NOT_TRACK": "true"},
            "flask": {
                "OMP_NUM_THREADS": "1",
                "BASELINE_MODEL": str(write_torch_model(settings, run_id, folder)),
                "BASELINE_METADATA": str(bundle / "metadata.json"),
            },
            "mlflow": {"MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri, "MLFLOW_DISABLE_TELEMETRY": "true"},
        }
        commands = {
            "bento": servers.bento_command(ports["bento"]),
            "flask": servers.flask_command(ports["flask"], workers),
            "mlflow": servers.mlflow_command(ports["mlflow"], workers, f"models:/{name}/{version}"),
        }
        probes = {
            "bento": ("/predict", "image"),
            "flask": ("/predict", "image"),
            "mlflow": ("/invocations", "mlflow-json"),
        }
        leaders = {}
        for name, (path, body) in probes.items():
            leaders[name] = running.enter_context(
                servers.server_process(
                    name,
                    commands[name],
                    env=environments[name],
                    probe_url=url[name] + path,
                    probe=bodies[body],
                    log_dir=folder,
                )
            ).pid
        pids: dict[str, Callable[[], list[int]]] = {
            name: partial(process_tree, leader) for name, leader in leaders.items()
        }
        pids["gateway"] = partial(gateway_pids, settings)
        image, json_body, mlflow_body = bodies["image"], bodies["json"], bodies["mlflow-json"]
        runs = [
            Run("onebox-gateway", "image", f"{url['gateway']}/predict", image, pids["gateway"]),
            # The default model at its own URL (/models/NAME/...) goes the same way: forwarded unchanged.
            Run("onebox-gateway-model", "image", f"{url['gateway_model']}/predict", image, pids["gateway"]),
            Run("onebox-bento", "image", f"{url['bento']}/predict", image, pids["bento"]),
            Run("flask-gunicorn", "image", f"{url['flask']}/predict", image, pids["flask"]),
            Run("onebox-gateway", "json", f"{url['gateway']}/predict_batch", json_body, pids["gateway"]),
            Run("onebox-bento", "json", f"{url['bento']}/predict_batch", json_body, pids["bento"]),
            Run("flask-gunicorn", "json", f"{url['flask']}/predict_batch", json_body, pids["flask"]),
            Run("mlflow-serve", "json", f"{url['mlflow']}/invocations", mlflow_body, pids["mlflow"]),
        ]
        for connections in CONNECTIONS:
            rounds: dict[Run, list[LoadResult]] = {run: [] for run in runs}
            cpu_ms: dict[Run, list[float]] = {run: [] for run in runs}
            for _ in range(ROUNDS):
                for run in runs:
                    run_load(wrk, run.url, run.body, connections=connections, seconds=WARM_UP_SECONDS)
                    processes = run.pids()
                    before = cpu_seconds(processes)
                    result = run_load(wrk, run.url, run.body, connections=connections, seconds=SECONDS)
                    rounds[run].append(result)
                    cpu_ms[run].append((cpu_seconds(processes) - before) * 1000 / max(1, result.requests))
            for run, measured in rounds.items():
                row = {
                    "server": run.server,
                    "request": run.request,
                    "endpoint": run.url.split("/", 3)[-1],
                    "connections": connections,
                    "requests": sum(m.requests for m in measured),
                    "errors": sum(m.errors for m in measured),
                    "rps": round(statistics.median(m.rps for m in measured), 1),
                    "p50_ms": round(statistics.median(m.p50_ms for m in measured), 2),
                    "p99_ms": round(statistics.median(m.p99_ms for m in measured), 2),
                    "rps_rounds": [round(m.rps) for m in measured],
                    "server_cpu_ms_per_request": round(statistics.median(cpu_ms[run]), 3),
                }
                results["runs"].append(row)
                print(f"{run.server:>16} {run.request:5} c={connections:<3} {row['rps']:8.0f} req/s p50 "
                      f"{row['p50_ms']:6.1f} ms p99 {row['p99_ms']:6.1f} ms errors {row['errors']} "
                      f"server CPU {row['server_cpu_ms_per_request']:.3f} ms/request")  # fmt: skip
    results["ratios"] = ratios(results["runs"])
    return results


def _row(runs: list[dict[str, Any]], server: str, request: str, connections: int) -> dict[str, Any]:
    return next(r for r in runs if (r["server"], r["request"], r["connections"]) == (server, request, connections))


def _efficiency(onebox: dict[str, Any], other: dict[str, Any]) -> float | None:
    mine, theirs = onebox.get("server_cpu_ms_per_request"), other.get("server_cpu_ms_per_request")
    return round(theirs / mine, 2) if mine and theirs else None


def ratios(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The targets' ratios: onebox through the gateway against Flask and against MLflow."""
    found: dict[str, Any] = {}
    for connections in CONNECTIONS:
        gateway_image = _row(runs, "onebox-gateway", "image", connections)
        flask_image = _row(runs, "flask-gunicorn", "image", connections)
        gateway_json = _row(runs, "onebox-gateway", "json", connections)
        mlflow_json = _row(runs, "mlflow-serve", "json", connections)
        found[str(connections)] = {
            "gateway_vs_flask_rps": round(gateway_image["rps"] / flask_image["rps"], 2),
            "gateway_p99_ms": gateway_image["p99_ms"],
            "flask_p99_ms": flask_image["p99_ms"],
            "gateway_vs_mlflow_rps": round(gateway_json["rps"] / mlflow_json["rps"], 2),
            # Requests/s the same CPU buys: robust to other load on the machine.
            "gateway_vs_flask_cpu_efficiency": _efficiency(gateway_image, flask_image),
            "gateway_vs_mlflow_cpu_efficiency": _efficiency(gateway_json, mlflow_json),
        }
    return found
