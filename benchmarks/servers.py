"""The model servers a benchmark compares, each started as its own process group on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from benchmarks.loadgen import Body
from serving.checkout import SOURCE_ROOT
from serving.processes import start_process_group, stop_process_group
from serving.waiting import NotYet, WaitTimeout, wait_for

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def isolated_appliance_environment(label: str, home: Path) -> dict[str, str]:
    """ONEBOX_* settings for an appliance of its own beside any other on this machine (the
    benchmarks' and the tests'): its home, compose project and free ports."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "ONEBOX_HOME": str(home),
        "ONEBOX_RUNTIME": "compose",
        "ONEBOX_COMPOSE_PROJECT": f"onebox-{label}-{suffix}",
        "ONEBOX_SERVE_PORT": str(free_port()),
        "ONEBOX_MLFLOW_PORT": str(free_port()),
        "ONEBOX_PREFECT_PORT": str(free_port()),
        "ONEBOX_LABEL_PORT": str(free_port()),
    }


@contextmanager
def server_process(
    name: str,
    command: list[str],
    *,
    env: dict[str, str],
    probe_url: str,
    probe: Body,
    log_dir: Path,
    timeout_s: float = 180,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` until the block ends; ready once ``probe`` POSTed to ``probe_url`` answers 200.

    Raises:
        RuntimeError: the server exited or did not answer in time (its log's tail is in the message).
    """
    log_path = log_dir / f"{name}.log"
    process = start_process_group(
        command,
        # The venv's bin first: `mlflow models serve` starts `uvicorn` by name.
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **env},
        log_path=log_path,
        cwd=SOURCE_ROOT,
        append=False,
    )

    def answered() -> None:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited while starting:\n{log_path.read_text()[-2000:]}")
        try:
            answer = httpx.post(probe_url, content=probe.data, headers={"Content-Type": probe.content_type})
        except httpx.TransportError as error:
            raise NotYet(type(error).__name__) from None
        if answer.status_code != 200:
            raise NotYet(f"it answered {answer.status_code}")

    try:
        try:
            wait_for(answered, timeout_s=timeout_s, what=f"{name} to answer {probe_url}", interval_s=0.5)
        except WaitTimeout as error:
            raise RuntimeError(f"{error}:\n{log_path.read_text()[-2000:]}") from error
        yield process
    finally:
        stop_process_group(process.pid)  # MLflow and BentoML leave children behind otherwise
        process.wait()


def bento_command(port: int) -> list[str]:
    return [str(BIN / "bentoml"), "serve", "serving.service:Classifier", "--host", "127.0.0.1", "--port", str(port)]


def flask_command(port: int, workers: int) -> list[str]:
    # gunicorn's default (sync) workers, as a hand-rolled deployment runs them.
    bind = f"127.0.0.1:{port}"
    return [str(BIN / "gunicorn"), "--workers", str(workers), "--bind", bind, "benchmarks.baselines.flask_app:app"]


def mlflow_command(port: int, workers: int, model_uri: str) -> list[str]:
    return [
        str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
        "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
