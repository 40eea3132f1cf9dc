"""The `onebox` command as a user runs it: clear one-line errors, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.servers import free_port
from storage.settings import Settings

ONEBOX = str(Path(sys.executable).with_name("onebox"))


def onebox(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ONEBOX_HOME": str(settings.home), "ONEBOX_SERVE_PORT": str(settings.serve_port)}
    return subprocess.run([ONEBOX, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("train", "--dataset", "nope"), "unknown dataset 'nope'"),
        (("data", "import", "/no/such/folder", "--name", "x"), "does not exist"),
        (("train", "--device", "tpu"), "device 'tpu' is unknown"),
    ],
)
def test_user_errors_print_one_clear_line(settings: Settings, args: tuple[str, ...], expected: str) -> None:
    done = onebox(settings, *args)
    assert done.returncode == 1
    assert expected in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ONEBOX_SUBNET", "10.99.0.0/28", "ONEBOX_SUBNET=10.99.0.0/28: 10.99.0.0/28 is too small"),
        ("ONEBOX_SUBNET", "10.99.0.1/24", "ONEBOX_SUBNET=10.99.0.1/24:"),
        ("ONEBOX_SERVE_WORKERS", "0", "ONEBOX_SERVE_WORKERS=0:"),
    ],
)
def test_a_bad_setting_names_its_variable(settings: Settings, variable: str, value: str, expected: str) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(variable, value)
        done = onebox(settings, "status")
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_an_mlflow_server_that_does_not_answer_is_one_line(settings: Settings) -> None:
    port = free_port()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ONEBOX_RUNTIME", "compose")
        patch.setenv("ONEBOX_MLFLOW_PORT", str(port))
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # refused at once, not after minutes of retries
        done = onebox(settings, "status")
    assert done.returncode == 1
    assert f"error: MLflow (http://127.0.0.1:{port}):" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_out_of_range_option_is_a_usage_error(settings: Settings) -> None:
    done = onebox(settings, "train", "--epochs", "0")
    assert done.returncode == 2
    assert "--epochs" in done.stderr
    assert "Traceback" not in done.stderr


def test_data_import_list_and_status(settings: Settings, tmp_path: Path) -> None:
    from tests.storage.test_datasets import make_folder

    imported = onebox(settings, "data", "import", str(make_folder(tmp_path / "src")), "--name", "parts")
    assert imported.returncode == 0, imported.stderr
    listed = json.loads(onebox(settings, "data", "list", "--json").stdout)
    assert [(d["name"], d["num_images"]) for d in listed] == [("parts", 6)]
    status = json.loads(onebox(settings, "status", "--json").stdout)
    assert status["serving"] is False
    assert status["production_version"] is None
