"""The local runtime: start, refuse a broken model while the old one keeps serving, stop."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import httpx
import pytest

from serving.local import LocalRuntime
from storage.errors import ServingError
from storage.registry import PRODUCTION, materialize_bundle, version_by_alias
from tests.conftest import TrainedPipeline

pytestmark = pytest.mark.slow


def test_broken_model_is_refused_and_the_old_one_serves_again(trained: TrainedPipeline, tmp_path: Path) -> None:
    settings = trained.settings
    production = version_by_alias(settings, "digits", PRODUCTION)
    assert production is not None
    broken = tmp_path / "broken"
    shutil.copytree(materialize_bundle(settings, "digits", production.version), broken)
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    runtime = LocalRuntime(settings)

    with pytest.raises(ServingError, match="exited while starting"):
        runtime.deploy(broken)

    state = runtime.current()
    assert state is not None
    assert state.model_version == production.version
    assert httpx.get(f"{settings.serve_url}/metadata").json()["model_version"] == production.version
    assert version_by_alias(settings, "digits", PRODUCTION) == production


def test_a_taken_port_is_named(settings, trained: TrainedPipeline) -> None:
    bundle = materialize_bundle(trained.settings, "digits", trained.result.model_version)
    with socket.socket() as squatter:
        squatter.bind((settings.serve_host, settings.serve_port))
        squatter.listen()
        with pytest.raises(ServingError, match=f"port {settings.serve_port}"):
            LocalRuntime(settings).start(bundle)


def test_start_status_stop(settings, trained: TrainedPipeline) -> None:
    runtime = LocalRuntime(settings)
    bundle = materialize_bundle(trained.settings, "digits", trained.result.model_version)
    state = runtime.start(bundle)
    try:
        assert runtime.current() == state
        assert httpx.get(f"{state.url}/readyz").status_code == 200
        with pytest.raises(ServingError, match="already served"):
            runtime.start(bundle)
    finally:
        stopped = runtime.stop()
    assert stopped == state
    assert runtime.current() is None
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{state.url}/readyz")
    assert runtime.stop() is None


def test_onebox_serve_restarts_the_production_model(trained: TrainedPipeline) -> None:
    import json
    import os
    import subprocess
    import sys

    settings = trained.settings
    before = LocalRuntime(settings).current()
    env = {**os.environ, "ONEBOX_HOME": str(settings.home), "ONEBOX_SERVE_PORT": str(settings.serve_port)}
    cli = str(Path(sys.executable).with_name("onebox"))
    done = subprocess.run([cli, "serve"], env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    status = json.loads(
        subprocess.run(
            [cli, "status", "--json"], env=env, capture_output=True, text=True, timeout=60, check=True
        ).stdout
    )
    production = version_by_alias(settings, "digits", PRODUCTION)
    assert production is not None
    assert status["served_version"] == production.version
    assert status["healthy"] is True
    assert before is not None
    assert status["pid"] != before.pid  # a new server process
    logs = subprocess.run([cli, "logs", "-n", "20"], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert "BentoServer" in logs.stdout
