"""A training run killed with SIGKILL mid-way, then continued with ``resume``: one run, every epoch once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.abandoned import fail_abandoned_runs
from flows.pipeline import training_pipeline
from storage.errors import ModelError, ParameterError
from storage.settings import Settings, get_settings
from tests.flows.generated import generated_dataset

pytestmark = pytest.mark.slow

EPOCHS = 4
RUN = {"dataset": "squares", "epochs": EPOCHS, "batch_size": 1, "seed": 0, "deploy": False, "min_improvement": -1.0}
# The killed run uses a Prefect server of its own (Prefect's temporary one), which dies with it:
# its `gpu` slot is not this server's concern (tests/flows/test_gpu_slot.py covers the slot).
TRAIN = "from flows.pipeline import training_pipeline; training_pipeline(**{run})"


@pytest.fixture
def home(tmp_path: Path, prefect_server: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("ONEBOX_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    settings = get_settings()
    generated_dataset(settings, tmp_path / "squares", classes=3, per_class=14, side=8)
    yield settings
    get_settings.cache_clear()


def kill_after_first_checkpoint(settings: Settings, tmp_path: Path) -> str:
    """Start the flow in a process of its own, SIGKILL it once a checkpoint exists; returns its run id."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    environment |= {
        "PREFECT_HOME": str(tmp_path / "prefect-killed"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "ONEBOX_HOME": str(settings.home),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", TRAIN.format(run=RUN)],
        env=environment,
        start_new_session=True,  # its temporary Prefect server dies with it
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = settings.home / "checkpoints"
    deadline = time.monotonic() + 300
    try:
        while not list(checkpoints.glob("*/last.pt")):
            assert process.poll() is None, "the training process ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)  # polling a file the process writes; nothing to wait on instead
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    (run_folder,) = list(checkpoints.iterdir())
    return run_folder.name


def test_a_killed_run_resumes_to_the_same_epochs_once_each(home: Settings, tmp_path: Path) -> None:
    run_id = kill_after_first_checkpoint(home, tmp_path)
    client = MlflowClient(home.mlflow_tracking_uri)
    assert client.get_run(run_id).info.status == "RUNNING"  # what a kill leaves
    assert fail_abandoned_runs(home) == [run_id]  # what the next run on this host does first
    assert client.get_run(run_id).info.status == "FAILED"

    with pytest.raises(ParameterError, match=r"learning_rate .* differs"):
        training_pipeline(**{**RUN, "learning_rate": 0.01}, resume=run_id)
    result = training_pipeline(**RUN, resume=run_id)

    run = client.get_run(run_id)
    assert result.run_id == run_id
    assert run.info.status == "FINISHED"
    done_before = int(run.data.tags["onebox.resumed_after_epoch"])
    assert 1 <= done_before < EPOCHS
    for metric in ("val_loss", "train_loss", "val_accuracy"):
        assert [m.step for m in client.get_metric_history(run_id, metric)] == list(range(1, EPOCHS + 1))
    assert run.data.params["epochs"] == str(EPOCHS)
    assert 1 <= run.data.metrics["best_epoch"] <= EPOCHS
    assert run.data.metrics["stopped_epoch"] == EPOCHS
    assert not (home.home / "checkpoints" / run_id).exists()  # the model is logged: checkpoints go

    with pytest.raises(ModelError, match="already finished"):
        training_pipeline(**RUN, resume=run_id)


def test_resuming_an_unknown_run_or_one_without_checkpoint_is_one_line(home: Settings) -> None:
    with pytest.raises(ModelError, match="no MLflow run 'nope' to resume"):
        training_pipeline(**RUN, resume="nope")
    from flows.tracking import start_run

    started = start_run(home, run_name="never-trained", tags={})
    with pytest.raises(ModelError, match=f"run {started} has no checkpoint"):
        training_pipeline(**RUN, resume=started)


def test_early_stopping_registers_the_best_epoch(home: Settings) -> None:
    # On this easy data, validation loss stops falling within a few epochs at this step size.
    result = training_pipeline(**{**RUN, "epochs": 8, "learning_rate": 0.03, "patience": 1, "batch_size": 4})
    run = MlflowClient(home.mlflow_tracking_uri).get_run(result.run_id)
    stopped, best = run.data.metrics["stopped_epoch"], run.data.metrics["best_epoch"]
    assert stopped < 8
    assert best == stopped - 1
    history = MlflowClient(home.mlflow_tracking_uri).get_metric_history(result.run_id, "val_loss")
    assert len(history) == stopped
    assert min(history, key=lambda m: m.value).step == best
