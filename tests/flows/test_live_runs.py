"""The locked records of trainings in progress, with real processes: a SIGKILLed one is told apart at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from flows import live_runs
from storage.settings import Settings
from tests.conftest import holding_process

HOLD = (
    "import sys\n"
    "from flows import live_runs\n"
    "from storage.settings import Settings\n"
    "settings = Settings(home=sys.argv[1])\n"
    "with live_runs.claim(settings, flow_run_id=sys.argv[2], flow_run_name='held') as live:\n"
    "    live.update(mlflow_run_id='m-' + sys.argv[2], lease_id='lease-' + sys.argv[2])\n"
    "    print('holding', flush=True)\n"
    "    sys.stdin.read()  # until the test closes stdin (or kills this process)\n"
)


def hold_record(settings: Settings, flow_run_id: str) -> subprocess.Popen[str]:
    """A process that holds a record until its stdin closes; returned once it holds it."""
    return holding_process(HOLD, str(settings.home), flow_run_id)


def test_a_live_training_is_seen_and_not_claimed(settings: Settings) -> None:
    holder = hold_record(settings, "a1")
    try:
        (alive,) = live_runs.held_by_others(settings)
        assert (alive.flow_run_id, alive.pid, alive.mlflow_run_id) == ("a1", holder.pid, "m-a1")
        assert "flow run held (pid" in alive.describe()
        with live_runs.claim_dead(settings) as dead:
            assert dead == []
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    assert live_runs.held_by_others(settings) == []
    assert list(live_runs.records_dir(settings).iterdir()) == []  # it cleaned up after itself


def test_a_sigkilled_training_is_claimed_once_with_what_it_held(settings: Settings) -> None:
    holder = hold_record(settings, "k1")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=60)
    assert live_runs.held_by_others(settings) == []
    with live_runs.claim_dead(settings) as dead:
        (record,) = dead
        assert (record.flow_run_id, record.lease_id, record.mlflow_run_id) == ("k1", "lease-k1", "m-k1")
        with live_runs.claim_dead(settings) as again:
            assert again == []  # this process holds it now: a second recovery does not get it
    with live_runs.claim_dead(settings) as after:
        assert after == []  # settled: removed


def test_a_recovery_that_fails_leaves_the_record_for_the_next(settings: Settings) -> None:
    holder = hold_record(settings, "f1")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=60)

    def recover_against_a_server_that_does_not_answer() -> None:
        with live_runs.claim_dead(settings) as dead:
            assert len(dead) == 1
            raise ConnectionError("the Prefect server did not answer")

    with pytest.raises(ConnectionError):
        recover_against_a_server_that_does_not_answer()
    with live_runs.claim_dead(settings) as retried:
        assert [record.flow_run_id for record in retried] == ["f1"]


def test_concurrent_recoveries_share_out_the_dead_without_overlap(settings: Settings) -> None:
    for index in range(6):
        holder = hold_record(settings, f"c{index}")
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=60)

    def recover(_: int) -> list[str]:
        with live_runs.claim_dead(settings) as dead:
            return [record.flow_run_id for record in dead]

    with ThreadPoolExecutor(4) as pool:
        shares = list(pool.map(recover, range(4)))
    claimed = [run for share in shares for run in share]
    assert sorted(claimed) == [f"c{index}" for index in range(6)]  # each exactly once


def test_a_record_cut_short_by_the_kill_still_names_its_flow_run(settings: Settings) -> None:
    folder = live_runs.records_dir(settings)
    folder.mkdir(parents=True)
    (folder / "3f1c.json").write_text('{"flow_run_id": "3f1c", "pid": 12')  # killed mid-write
    (folder / "4a2d.json").write_text(json.dumps({"flow_run_id": "4a2d", "pid": 7, "unknown_field": 1}))
    (folder / ".5b3e.99.tmp").write_text("{}")  # still being created: never a record
    with live_runs.claim_dead(settings) as dead:
        assert sorted(record.flow_run_id for record in dead) == ["3f1c", "4a2d"]
        assert next(record for record in dead if record.flow_run_id == "4a2d").pid == 7


def test_its_own_record_is_not_among_the_others(settings: Settings, tmp_path: Path) -> None:
    with live_runs.claim(settings, flow_run_id=None) as live:
        assert live.record.flow_run_id.startswith("no-flow-run-")
        assert live_runs.held_by_others(settings) == []
        with live_runs.claim_dead(settings) as dead:
            assert dead == []  # this process holds it: not dead
        assert json.loads(live.path.read_text())["pid"] == os.getpid()
    assert not live.path.exists()
