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


def onebox(settings: Settings, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ONEBOX_HOME": str(settings.home),
        "ONEBOX_SERVE_PORT": str(settings.serve_port),
        "COLUMNS": str(columns),  # what rich wraps help and error panels at
    }
    return subprocess.run([ONEBOX, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("train", "--dataset", "nope"), "unknown dataset 'nope'"),
        (("data", "import", "/no/such/folder", "--name", "x"), "does not exist"),
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


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--epochs", "0", "greater than or equal to 1"),
        ("--lr", "0", "greater than 0"),
        ("--device", "gpu", "should be 'auto', 'cpu' or 'cuda'"),
        ("--seed", str(2**31), "less than or equal to 2147483647"),
        ("--dataset", "", "at least 1 character"),
        ("--model", "Digits", "model name 'Digits' is not valid"),  # upper case
        ("--model", "../etc", "model name '../etc' is not valid"),  # path characters
        ("--model", "my model", "model name 'my model' is not valid"),  # a space
        ("--model", "m" * 65, "is not valid: use 1-64 lowercase letters"),  # too long
    ],
)
def test_a_bad_training_parameter_is_a_usage_error_before_anything_starts(
    settings: Settings, option: str, value: str, message: str
) -> None:
    done = onebox(settings, "train", option, value, columns=200)
    assert done.returncode == 2
    assert f"Invalid value for '{option}': " in done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not settings.home.exists()  # no flow, no store, no dataset: refused while parsing


def test_train_help_lists_every_parameter_with_its_limits(settings: Settings) -> None:
    from flows.cli.training import OPTION_NAMES
    from flows.parameters import TrainingParameters, describe

    done = onebox(settings, "train", "--help", columns=300)
    assert done.returncode == 0, done.stderr
    words = " ".join(done.stdout.split())
    for name, field in TrainingParameters.model_fields.items():
        flag = OPTION_NAMES.get(name, "--" + name.replace("_", "-")).split("/")[0]
        assert f" {flag} " in words, name
        assert describe(field) in words, name
    assert "(above 0, at most 1)" in words  # --lr's limit, as the flow has it
    assert "--here" in words


def test_data_import_list_and_status(settings: Settings, tmp_path: Path) -> None:
    from tests.storage.test_datasets import make_folder

    imported = onebox(settings, "data", "import", str(make_folder(tmp_path / "src")), "--name", "parts")
    assert imported.returncode == 0, imported.stderr
    listed = json.loads(onebox(settings, "data", "list", "--json").stdout)
    assert [(d["name"], d["num_images"]) for d in listed] == [("parts", 6)]
    status = json.loads(onebox(settings, "status", "--json").stdout)
    assert status["serving"] is False
    assert status["models"] == []
    assert status["default_model"] is None


def two_models(settings: Settings) -> None:
    """A registry with the models digits (v1-2, production v2) and parts (v1, production v1, retired)."""
    from mlflow import MlflowClient

    from storage.registry import RETIRED_TAG
    from tests.storage.test_mlflow_peek import register

    register(settings, versions=2, alias_on=2, name="digits")
    register(settings, versions=1, alias_on=1, name="parts")
    client = MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)
    client.set_model_version_tag("digits", "2", "dataset", "digits:abc")
    client.set_model_version_tag("digits", "2", "test_accuracy", "0.9500")
    client.set_registered_model_tag("parts", RETIRED_TAG, "true")


@pytest.mark.parametrize(
    "args",
    [("rollback", "--model", "nope"), ("retire", "nope"), ("serve", "--model", "nope"), ("rollback", "-m", "Nope")],
)
def test_an_unknown_model_is_one_line_listing_the_known_ones(settings: Settings, args: tuple[str, ...]) -> None:
    two_models(settings)
    done = onebox(settings, *args, columns=200)
    assert done.returncode == 1, done.stderr
    assert f"error: unknown model '{args[-1]}'; known models: digits, parts" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr + done.stdout


def test_rollback_asks_which_model_when_there_are_several(settings: Settings) -> None:
    two_models(settings)
    done = onebox(settings, "rollback", columns=200)
    assert done.returncode == 1
    assert "there are 2 models (digits, parts): say which one with --model NAME" in done.stderr


def test_rollback_with_nothing_registered_says_what_to_do(settings: Settings) -> None:
    done = onebox(settings, "rollback", columns=200)
    assert done.returncode == 1
    assert "no model is registered yet; train one with: onebox train --model NAME" in done.stderr
    assert not settings.mlflow_db_path.exists()  # the quick read created nothing


def test_models_lists_every_model_with_its_state(settings: Settings) -> None:
    two_models(settings)
    rows = json.loads(onebox(settings, "models", "--json").stdout)
    assert [(row["name"], row["production_version"], row["state"]) for row in rows] == [
        ("digits", "2", "not served"),
        ("parts", "1", "retired"),
    ]
    assert rows[0]["dataset"] == "digits:abc"
    assert rows[0]["test_accuracy"] == 0.95
    assert rows[0]["url"] == f"{settings.serve_url}/models/digits"
    table = onebox(settings, "models", columns=200)
    assert table.returncode == 0, table.stderr
    lines = [line.split() for line in table.stdout.splitlines()]
    assert ["digits", "v2", "digits:abc", "0.9500", f"{settings.serve_url}/models/digits", "not", "served"] in lines
    assert ["parts", "v1", "-", "-", f"{settings.serve_url}/models/parts", "retired"] in lines
