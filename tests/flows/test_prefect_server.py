"""The local runtime's Prefect server, as real processes: started once, reused, recovered, stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.servers import free_port
from flows.prefect_server import LocalPrefectServer, use_local_prefect_server
from serving.processes import process_alive
from serving.waiting import NotYet, wait_for
from storage.settings import Settings

pytestmark = pytest.mark.slow  # each test starts a real `prefect server start`
ONEBOX = str(Path(sys.executable).with_name("onebox"))


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Settings]:
    """Settings of a home of its own, with free ports; its Prefect server is stopped afterwards."""
    settings = Settings(home=tmp_path / "home", runtime="local", serve_port=free_port(), local_prefect_port=free_port())
    try:
        yield settings
    finally:
        LocalPrefectServer(settings).stop()


def environment(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "ONEBOX_HOME": str(settings.home),
        "ONEBOX_RUNTIME": "local",
        "ONEBOX_SERVE_PORT": str(settings.serve_port),
        "ONEBOX_LOCAL_PREFECT_PORT": str(settings.local_prefect_port),
    }


def onebox(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ONEBOX, *args], env=environment(settings), capture_output=True, text=True, timeout=300, check=False
    )


START = (
    "from flows.prefect_server import LocalPrefectServer\n"
    "from storage.settings import get_settings\n"
    "server = LocalPrefectServer(get_settings())\n"
    "server.start()\n"
    "print(server.wait_ready().pid)\n"
)


def start_elsewhere(settings: Settings) -> subprocess.Popen[str]:
    """Start the server from another process, as a command does (it is then not this test's child)."""
    return subprocess.Popen([sys.executable, "-c", START], env=environment(settings), stdout=subprocess.PIPE, text=True)


def test_starts_once_and_later_commands_reuse_it(local: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "")  # restored afterwards: use_local_prefect_server sets it
    server = use_local_prefect_server(local)
    assert server is not None
    first = server.wait_ready()
    assert os.environ["PREFECT_API_URL"] == f"http://127.0.0.1:{local.local_prefect_port}/api"
    again = use_local_prefect_server(local)
    assert again is not None
    assert again.wait_ready().pid == first.pid
    status = json.loads(onebox(local, "status", "--json").stdout)
    assert status["prefect_ui"] == f"http://127.0.0.1:{local.local_prefect_port}"


def test_prefect_pointed_elsewhere_starts_nothing(local: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert use_local_prefect_server(local) is None
    assert use_local_prefect_server(local.model_copy(update={"runtime": "compose"})) is None
    assert LocalPrefectServer(local).current() is None


def test_a_sigkilled_server_is_started_again(local: Settings) -> None:
    server = LocalPrefectServer(local)
    server.start()
    killed = server.wait_ready()
    os.kill(killed.pid, signal.SIGKILL)  # as the OOM killer would: no chance to clean up

    def gone() -> None:
        if process_alive(killed.pid):
            raise NotYet("still runs")

    wait_for(gone, timeout_s=10, what="the killed server to exit")
    assert server.state_path.is_file()  # stale
    restarted = server.start()
    assert restarted.pid != killed.pid
    assert server.wait_ready().pid == restarted.pid


def test_two_commands_starting_it_at_once_get_one_server(local: Settings) -> None:
    starters = [start_elsewhere(local) for _ in range(2)]
    pids = {starter.communicate(timeout=300)[0].strip() for starter in starters}
    assert all(starter.returncode == 0 for starter in starters)
    assert len(pids) == 1
    current = LocalPrefectServer(local).current()
    assert current is not None
    assert pids == {str(current.pid)}


def test_its_port_taken_by_another_program_is_one_clear_line(local: Settings) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", local.local_prefect_port))
        other.listen()
        done = onebox(local, "train", "--epochs", "1")
    assert done.returncode == 1
    assert f"port {local.local_prefect_port}" in done.stderr
    assert "ONEBOX_LOCAL_PREFECT_PORT" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert LocalPrefectServer(local).current() is None


def test_onebox_stop_stops_it(local: Settings) -> None:
    server = LocalPrefectServer(local)
    starter = start_elsewhere(local)
    pid = int(starter.communicate(timeout=300)[0])
    done = onebox(local, "stop")
    assert done.returncode == 0, done.stderr
    assert f"stopped the local Prefect server (pid {pid})" in done.stdout
    assert not process_alive(pid)
    assert server.current() is None
    assert json.loads(onebox(local, "status", "--json").stdout)["prefect_ui"] is None
