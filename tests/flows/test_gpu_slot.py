"""The `gpu` slot with real `onebox train` processes on the local runtime's Prefect server, killed at every stage.

A training SIGKILLed while it holds the slot, while it exports or while it waits must not leave
the slot taken, its runs RUNNING, or a second Prefect server; Ctrl-C ends a wait in one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import pytest

from benchmarks.servers import free_port
from flows import live_runs
from flows.deployments import GPU_LIMIT
from flows.gpu_slot import LEASE_S
from flows.prefect_server import LocalPrefectServer
from storage.settings import Settings
from tests.conftest import holding_process
from tests.flows.generated import generated_dataset

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

# Real trainings, each a process of its own, on a real Prefect server: each start is 10-120 s of
# imports on 2 shared cores, and a test starts up to three.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
ONEBOX = str(Path(sys.executable).with_name("onebox"))
HOLDING, WAITING, RECOVERED = f"holding a {GPU_LIMIT!r} slot", "waiting for a slot of the", "died without ending"
LINE_TIMEOUT_S = 420.0  # a training's start is 10-40 s of imports on 2 busy cores


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Settings]:
    """A home with a small dataset, free ports and its own local Prefect server (stopped afterwards)."""
    settings = Settings(home=tmp_path / "home", runtime="local", serve_port=free_port(), local_prefect_port=free_port())
    generated_dataset(settings, tmp_path / "squares", classes=3, per_class=14, side=8)
    try:
        yield settings
    finally:
        LocalPrefectServer(settings).stop()


@dataclass
class Training:
    """An `onebox train` process whose output lines are read as they come, each with when it came."""

    process: subprocess.Popen[str]
    lines: queue.Queue[tuple[float, str]] = field(default_factory=queue.Queue)
    seen: list[tuple[float, str]] = field(default_factory=list)

    def wait_line(self, text: str, *, timeout_s: float = LINE_TIMEOUT_S) -> float:
        """Block until a line containing ``text`` appears; returns when it was read."""
        for when, line in self.seen:
            if text in line:
                return when
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                when, line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r} in {timeout_s:.0f} s:\n{self.output[-4000:]}") from None
            self.seen.append((when, line))
            if text in line:
                return when

    def finish(self, *, timeout_s: float = LINE_TIMEOUT_S) -> int:
        code = self.process.wait(timeout=timeout_s)
        self.drain()
        return code

    def drain(self) -> None:
        while not self.lines.empty():
            self.seen.append(self.lines.get())

    @property
    def output(self) -> str:
        self.drain()
        return "\n".join(line for _, line in self.seen)

    def kill(self) -> float:
        self.process.send_signal(signal.SIGKILL)  # as `kill -9` or the OOM killer: no cleanup at all
        killed_at = time.monotonic()
        self.process.wait(timeout=60)
        return killed_at


STARTED: list[Training] = []


@pytest.fixture(autouse=True)
def _no_training_outlives_its_test() -> Iterator[None]:
    yield
    while STARTED:  # a test that failed half-way leaves its trainings running
        training = STARTED.pop()
        if training.process.poll() is None:
            training.kill()
            print(f"killed a training left running; its output:\n{training.output[-3000:]}")


def train(settings: Settings, *options: str) -> Training:
    """``onebox train`` on ``settings``' home and runtime (the appliance's settings are in this environment)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    environment |= {
        "ONEBOX_HOME": str(settings.home),
        "ONEBOX_RUNTIME": settings.runtime,
        "ONEBOX_SERVE_PORT": str(settings.serve_port),
        "ONEBOX_LOCAL_PREFECT_PORT": str(settings.local_prefect_port),
        "COLUMNS": "200",  # one log record per line
    }
    command = [ONEBOX, "train", "--dataset", "squares", "--batch-size", "1", "--no-deploy", *options]
    process = subprocess.Popen(
        command,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl-C reaches it as at a terminal: a process started in the background inherits SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    training = Training(process)
    STARTED.append(training)

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            training.lines.put((time.monotonic(), line.rstrip("\n")))

    threading.Thread(target=read, daemon=True).start()
    return training


LONG = ("--epochs", "1000")  # trains until killed: about 0.1 s an epoch here
SHORT = ("--epochs", "1", "--min-improvement", "-1")


def record_of(settings: Settings, training: Training) -> live_runs.TrainingRecord:
    """The live record of one running training (its flow run and MLflow run ids)."""
    for path in live_runs.records_dir(settings).glob("*.json"):
        record = live_runs.TrainingRecord(**json.loads(path.read_text()))
        if record.pid == training.process.pid:
            return record
    raise AssertionError(f"no record of pid {training.process.pid}")


@contextlib.contextmanager
def prefect_client(settings: Settings) -> Iterator[SyncPrefectClient]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = settings.prefect_api_url or LocalPrefectServer(settings).api_url
    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        yield client


def flow_run_state(settings: Settings, flow_run_id: str) -> str:
    with prefect_client(settings) as client:
        state = client.read_flow_run(UUID(flow_run_id)).state
    assert state is not None
    return state.type.value


def task_run_states(settings: Settings, flow_run_id: str) -> dict[str, str]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with prefect_client(settings) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])))
    return {task.name: task.state.type.value for task in tasks if task.state is not None}


def active_slots(settings: Settings) -> int:
    with prefect_client(settings) as client:
        return client.read_global_concurrency_limit_by_name(GPU_LIMIT).active_slots


def mlflow_status(settings: Settings, run_id: str | None) -> str:
    from mlflow import MlflowClient

    assert run_id is not None
    return MlflowClient(settings.mlflow_tracking_uri).get_run(run_id).info.status


def prefect_server_groups(settings: Settings) -> set[int]:
    """Process groups of `prefect server start` processes on this home's port: one server is one group."""
    groups = set()
    marker = f"--port\x00{settings.local_prefect_port}\x00".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes()
            if b"prefect" in command and b"server\x00start" in command and marker in command:
                groups.add(os.getpgid(int(proc.name)))
        except (OSError, ProcessLookupError):
            continue  # it ended while we looked
    return groups


def server_pid(settings: Settings) -> int:
    state = LocalPrefectServer(settings).current()
    assert state is not None
    return state.pid


def assert_settled(settings: Settings, record: live_runs.TrainingRecord) -> None:
    """The killed training's runs are no longer RUNNING, and none of its task runs is."""
    assert flow_run_state(settings, record.flow_run_id) == "CRASHED"
    assert "RUNNING" not in task_run_states(settings, record.flow_run_id).values()
    if record.mlflow_run_id:
        assert mlflow_status(settings, record.mlflow_run_id) == "FAILED"


@pytest.mark.parametrize(
    "kill_at", [HOLDING, "epoch 2/", f"released the {GPU_LIMIT!r} slot"], ids=["slot-taken", "mid-epoch", "exporting"]
)
def test_a_killed_training_frees_the_slot_and_the_next_starts_at_once(home: Settings, kill_at: str) -> None:
    first = train(home, *(("--epochs", "2") if kill_at.startswith("released") else LONG))
    first.wait_line(kill_at)
    record = record_of(home, first)
    server = server_pid(home)
    first.kill()

    second = train(home, *SHORT)
    assert second.finish() == 0, second.output[-4000:]
    assert RECOVERED in second.output  # it settled the dead one first
    assert WAITING not in second.output  # and never waited for its slot
    assert_settled(home, record)
    assert active_slots(home) == 0
    assert server_pid(home) == server  # the same server, reused
    assert prefect_server_groups(home) == {os.getpgid(server)}  # and no other one
    assert list(live_runs.records_dir(home).glob("*.json")) == []


def test_ctrl_c_ends_a_wait_for_the_slot_in_one_line_and_takes_no_slot(home: Settings) -> None:
    holder = train(home, *LONG)
    holder.wait_line(HOLDING)
    held = record_of(home, holder)

    interrupted = train(home, *SHORT)
    interrupted.wait_line(WAITING)
    assert f"held by flow run {held.flow_run_name} (pid {held.pid}" in interrupted.output  # says who holds it
    gave_up = record_of(home, interrupted)
    interrupted.process.send_signal(signal.SIGINT)  # Ctrl-C
    assert interrupted.finish() == 130, interrupted.output[-4000:]
    assert interrupted.output.splitlines()[-1] == (
        f"error: interrupted (Ctrl-C) while waiting for a {GPU_LIMIT!r} slot; nothing was trained; "
        "the flow run is cancelled"
    )
    assert "Traceback" not in interrupted.output
    assert flow_run_state(home, gave_up.flow_run_id) == "CANCELLED"
    assert mlflow_status(home, gave_up.mlflow_run_id) == "KILLED"
    assert active_slots(home) == 1  # still the holder's: the interrupted one took none
    assert [record.pid for record in live_runs.held_by_others(home)] == [holder.process.pid]


def test_two_at_once_the_second_waits_and_starts_when_the_first_is_killed(home: Settings) -> None:
    holder = train(home, *LONG)
    holder.wait_line(HOLDING)
    held = record_of(home, holder)
    # Two wait side by side; one is killed while waiting, the other gets the holder's slot.
    killed_waiting, successor = train(home, *SHORT), train(home, *SHORT)
    killed_waiting.wait_line(WAITING)
    died_waiting = record_of(home, killed_waiting)
    killed_waiting.kill()
    successor.wait_line(WAITING)

    killed_at = holder.kill()
    handed_over_s = successor.wait_line(HOLDING) - killed_at
    print(f"the slot of a SIGKILLed holder went to the waiting training {handed_over_s:.1f} s after the kill")
    assert handed_over_s < LEASE_S  # not the lease's expiry: the waiting one settled the dead holder
    assert successor.finish() == 0, successor.output[-4000:]
    assert_settled(home, held)
    assert_settled(home, died_waiting)  # killed while waiting: settled as well
    assert active_slots(home) == 0
    assert list(live_runs.records_dir(home).glob("*.json")) == []


HOLD_A_LEASE = (
    "from prefect.client.orchestration import get_client\n"
    "import sys\n"
    "with get_client(sync_client=True) as client:\n"
    "    client.increment_concurrency_slots_with_lease(names=['gpu'], slots=1, mode='concurrency', lease_duration=60)\n"
    "print('holding', flush=True)\n"
    "sys.stdin.read()\n"
)


def test_a_lease_no_record_vouches_for_expires_on_the_server_even_across_its_restart(home: Settings) -> None:
    """A holder elsewhere (another home, another machine) that dies: the server's own expiry frees the slot."""
    server = LocalPrefectServer(home)
    server.start()
    server.wait_ready()

    def restart() -> None:
        server.stop()
        server.start()
        server.wait_ready()

    expired_s = expire_a_dead_holders_lease(home, server.api_url, restart=restart)
    print(f"the local server expired a dead holder's lease {expired_s:.1f} s after the kill (restarted meanwhile)")


def expire_a_dead_holders_lease(settings: Settings, api_url: str, *, restart: Callable[[], None]) -> float:
    """Seconds from the SIGKILL of a lease's holder, with no record, to its slot free; the server restarted between."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deployments import ensure_gpu_limit
    from serving.waiting import NotYet, wait_for

    with temporary_settings({PREFECT_API_URL: api_url}):
        ensure_gpu_limit()
    environment = {**os.environ, "PREFECT_API_URL": api_url}
    holder = holding_process(HOLD_A_LEASE, env=environment)
    assert active_slots(settings) == 1
    holder.kill()
    killed_at = time.monotonic()
    holder.wait(timeout=60)
    # Restarted while the dead holder's lease runs: a lease kept in memory was lost here, and its
    # slot stayed taken for good.
    restart()

    def freed() -> None:
        if active_slots(settings) != 0:
            raise NotYet("the slot is still taken")

    wait_for(freed, timeout_s=LEASE_S + 120, interval_s=1.0, what="the server to expire the dead holder's lease")
    expired_s = time.monotonic() - killed_at
    assert expired_s < LEASE_S + 60  # the lease's 60 s, the 5 s check, a busy machine's slack
    return expired_s
