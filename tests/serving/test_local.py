"""The local runtime: one model server for every model; deploy and stop one while the others serve on."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from serving.local import LocalRuntime
from serving.runtime import Runtime
from serving.waiting import NotYet, wait_for
from storage.errors import ServingError
from storage.registry import PRODUCTION, materialize_bundle, version_by_alias
from storage.settings import Settings
from tests.conftest import TrainedPipeline, png_bytes
from tests.serving.conftest import DIGITS_SHAPE, colors_bundle, digits_bundle, lit_pixel


def served(runtime: LocalRuntime) -> list[tuple[str, str]]:
    return [(state.model_name, state.model_version) for state in runtime.served()]


def label(url: str, image_shape: tuple[int, int, int], pixel: int) -> str:
    files = {"image": ("i.png", png_bytes(lit_pixel(image_shape, pixel)), "image/png")}
    answer = httpx.post(f"{url}/predict", files=files)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["label"])


@pytest.mark.slow
def test_deploy_and_stop_one_model_while_the_other_serves(local_settings: Settings, tmp_path: Path) -> None:
    runtime: Runtime = LocalRuntime(local_settings)  # the protocol the flows drive
    assert isinstance(runtime, LocalRuntime)
    url = local_settings.serve_url
    try:
        digits = runtime.deploy(digits_bundle(tmp_path / "digits-1"))
        colors = runtime.deploy(colors_bundle(tmp_path / "colors-1"))
        assert served(runtime) == [("digits", "1"), ("colors", "1")]
        assert colors.url == f"{url}/models/colors"
        assert label(f"{url}/models/colors", (3, 16, 16), 1) == "green"

        again = runtime.deploy(digits_bundle(tmp_path / "digits-2", version="2"))
        assert served(runtime) == [("digits", "2"), ("colors", "1")]  # first-served order kept
        assert again.pid != digits.pid
        assert httpx.get(f"{again.url}/metadata").json()["model_version"] == "2"
        assert label(f"{url}/models/colors", (3, 16, 16), 2) == "blue"

        assert [state.model_version for state in runtime.stop("digits")] == ["2"]
        assert served(runtime) == [("colors", "1")]
        gone = httpx.get(f"{url}/models/digits/metadata")
        assert gone.status_code == 404
        assert gone.json()["error"] == "unknown model 'digits'; served models: colors"
        assert httpx.get(f"{url}/metadata").json()["model_name"] == "colors"  # the default now
        assert runtime.stop("digits") == []
        assert runtime.current("digits") is None
    finally:
        stopped = runtime.stop()
    assert [state.model_name for state in stopped] == ["colors"]
    assert runtime.served() == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/readyz")


@pytest.mark.slow
def test_a_broken_version_leaves_every_model_as_it_was(local_settings: Settings, tmp_path: Path) -> None:
    runtime = LocalRuntime(local_settings)
    try:
        runtime.deploy(digits_bundle(tmp_path / "digits-1"))
        runtime.deploy(colors_bundle(tmp_path / "colors-1"))
        broken = digits_bundle(tmp_path / "digits-2", version="2")
        (broken / "model.onnx").write_bytes(b"not an onnx graph")

        with pytest.raises(ServingError, match="exited while starting"):
            runtime.deploy(broken)

        assert served(runtime) == [("digits", "1"), ("colors", "1")]
        assert label(f"{local_settings.serve_url}/models/digits", DIGITS_SHAPE, 3) == "3"
        assert label(f"{local_settings.serve_url}/models/colors", (3, 16, 16), 0) == "red"
    finally:
        runtime.stop()


@pytest.mark.slow
def test_default_model_and_a_state_file_from_before(local_settings: Settings, tmp_path: Path) -> None:
    runtime = LocalRuntime(local_settings.model_copy(update={"default_model": "colors"}))
    try:
        runtime.deploy(digits_bundle(tmp_path / "digits-1"))
        runtime.deploy(colors_bundle(tmp_path / "colors-1"))
        assert httpx.get(f"{local_settings.serve_url}/metadata").json()["model_name"] == "colors"

        # A home whose state file was written when one server held one model keeps working.
        digits = runtime.current("digits")
        assert digits is not None
        old = {**json.loads(runtime.state_path.read_text())["models"][0], "url": local_settings.serve_url}
        runtime.state_path.write_text(json.dumps(old))
        (state,) = runtime.served()
        assert (state.model_name, state.url) == ("digits", f"{local_settings.serve_url}/models/digits")
        assert runtime.current("colors") is None  # the old file recorded one model
    finally:
        runtime.stop()
    assert runtime.served() == []


@pytest.mark.slow
def test_after_kill_9_a_deploy_brings_every_model_back(local_settings: Settings, tmp_path: Path) -> None:
    runtime = LocalRuntime(local_settings)
    try:
        runtime.deploy(digits_bundle(tmp_path / "digits-1"))
        first = runtime.deploy(colors_bundle(tmp_path / "colors-1"))
        os.killpg(first.pid, signal.SIGKILL)

        def gone() -> None:
            if runtime.served():
                raise NotYet("still served")

        wait_for(gone, timeout_s=30, what="the killed server to be gone")
        second = runtime.deploy(colors_bundle(tmp_path / "colors-2", version="2"))
        assert served(runtime) == [("digits", "1"), ("colors", "2")]
        assert label(f"{local_settings.serve_url}/models/digits", DIGITS_SHAPE, 8) == "8"

        # Stopping one model of a killed server: the others still come back with the next deploy.
        os.killpg(second.pid, signal.SIGKILL)
        wait_for(gone, timeout_s=30, what="the killed server to be gone")
        assert runtime.stop("colors") == []
        runtime.deploy(digits_bundle(tmp_path / "digits-3", version="3"))
        assert served(runtime) == [("digits", "3")]
    finally:
        runtime.stop()


@pytest.mark.slow
def test_two_deploys_at_once_both_serve(local_settings: Settings, tmp_path: Path) -> None:
    bundles = [digits_bundle(tmp_path / "digits-1"), colors_bundle(tmp_path / "colors-1")]
    errors: list[BaseException] = []

    def deploy(bundle: Path) -> None:
        try:
            LocalRuntime(local_settings).deploy(bundle)  # as two commands would, each its own runtime
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=deploy, args=(bundle,)) for bundle in bundles]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert errors == []
        assert sorted(served(LocalRuntime(local_settings))) == [("colors", "1"), ("digits", "1")]
    finally:
        LocalRuntime(local_settings).stop()


def test_a_taken_port_is_named(local_settings: Settings, tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind((local_settings.serve_host, local_settings.serve_port))
        squatter.listen()
        with pytest.raises(ServingError, match=f"port {local_settings.serve_port}"):
            LocalRuntime(local_settings).deploy(digits_bundle(tmp_path / "digits"))
    assert LocalRuntime(local_settings).served() == []


def test_logs_of_an_unknown_model_name_the_served_ones(local_settings: Settings) -> None:
    with pytest.raises(ServingError, match="unknown model 'nope'; served models: none"):
        LocalRuntime(local_settings).logs(model_name="nope")
    assert LocalRuntime(local_settings).logs() == ""


@pytest.mark.slow
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

    state = runtime.current("digits")
    assert state is not None
    assert state.model_version == production.version
    assert httpx.get(f"{settings.serve_url}/metadata").json()["model_version"] == production.version
    assert httpx.get(f"{state.url}/metadata").json()["model_version"] == production.version
    assert version_by_alias(settings, "digits", PRODUCTION) == production


@pytest.mark.slow
def test_onebox_serve_restarts_the_production_model(trained: TrainedPipeline) -> None:
    settings = trained.settings
    before = LocalRuntime(settings).current("digits")
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
    (model,) = status["models"]
    assert (model["name"], model["served_version"], model["state"]) == ("digits", production.version, "serving")
    assert model["healthy"] is True
    assert status["default_model"] == "digits"
    assert before is not None
    assert model["pid"] != before.pid  # a new server process
    logs = subprocess.run([cli, "logs", "-n", "20"], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert "BentoServer" in logs.stdout
