"""The local runtime's Prefect server: one ``prefect server start`` beside the local model server.

Prefect's temporary server took about 14 s to start for every ``onebox train``; this one starts
on first need (``onebox train``, ``onebox demo``), stays up for the commands after it, and gives
the embedded user Prefect's UI. It runs as a process group of its own on 127.0.0.1, with its
database in ``$ONEBOX_HOME/prefect``, its pid in ``$ONEBOX_HOME/run/prefect.json`` and its log
in ``$ONEBOX_HOME/run/prefect.log``; ``onebox stop`` stops it. A file lock makes two commands
that start it at the same moment find one server.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from serving.health import wait_until_ready
from serving.processes import port_in_use, process_alive, start_process_group, stop_process_group
from storage.errors import ServingError
from storage.locks import exclusive_lock
from storage.settings import Settings

HOST = "127.0.0.1"
READY_TIMEOUT_S = 180.0  # it became healthy in 7-14 s on 2 cores; far longer on a busy machine
# Concurrency leases (the `gpu` slot, flows/gpu_slot.py) kept on disk, so a server restarted while
# a training holds one still expires it (in memory, the slot stayed taken for good), and looked
# for every 5 s instead of 15. The appliance's server gets the same (docker-compose.yml).
LEASE_SETTINGS = {
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem",
    "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "5",
}


class PrefectServerError(ServingError):
    """The local Prefect server could not be started or did not become healthy."""


@dataclass(frozen=True)
class PrefectServerState:
    pid: int
    url: str  # the UI; the API is under /api
    started: str

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


class LocalPrefectServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = f"http://{HOST}:{settings.local_prefect_port}"
        self.state_path = settings.run_dir / "prefect.json"
        self.log_path = settings.run_dir / "prefect.log"
        self.lock_path = settings.run_dir / "prefect.lock"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def current(self) -> PrefectServerState | None:
        """The running server's state; a stale state file (the server was killed) is cleared."""
        if not self.state_path.is_file():
            return None
        state = PrefectServerState(**json.loads(self.state_path.read_text()))
        if _server_alive(state.pid):
            return state
        # A SIGKILLed leader can leave children of its group behind; they would hold the port.
        stop_process_group(state.pid, timeout_s=5)
        self.state_path.unlink(missing_ok=True)
        return None

    def start(self) -> PrefectServerState:
        """Start the server unless it runs; returns at once (see :meth:`wait_ready`).

        Raises:
            PrefectServerError: its port is used by another program.
        """
        with self._lock():
            state = self.current()
            if state is not None and state.url == self.url:
                return state
            if state is not None:  # started on another port before the setting changed
                stop_process_group(state.pid)
                self.state_path.unlink(missing_ok=True)
            if port_in_use(HOST, self.settings.local_prefect_port):
                raise PrefectServerError(
                    f"port {self.settings.local_prefect_port} on {HOST} (the local Prefect server's) is used by "
                    "another program; stop it or set ONEBOX_LOCAL_PREFECT_PORT to a free port"
                )
            self.settings.prefect_home.mkdir(parents=True, exist_ok=True)
            environment = {
                key: value for key, value in os.environ.items() if key not in {"PREFECT_API_URL", "PREFECT_HOME"}
            }
            environment.update(
                {
                    "PREFECT_HOME": str(self.settings.prefect_home),
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                    "DO_NOT_TRACK": "true",
                    **LEASE_SETTINGS,
                }
            )
            prefect = Path(sys.executable).with_name("prefect")
            command = [str(prefect), "server", "start", "--host", HOST, "--port", str(self.settings.local_prefect_port)]
            process = start_process_group(command, env=environment, log_path=self.log_path)
            state = PrefectServerState(
                pid=process.pid, url=self.url, started=datetime.now(UTC).isoformat(timespec="seconds")
            )
            self.state_path.write_text(json.dumps(asdict(state), indent=2))
            return state

    def wait_ready(self, *, timeout_s: float = READY_TIMEOUT_S) -> PrefectServerState:
        """Wait until the running server answers ``/api/health``.

        Raises:
            PrefectServerError: it is not running, exited while starting, or was not healthy in time.
        """
        state = self.current()
        if state is None:
            raise PrefectServerError(f"the local Prefect server is not running; see {self.log_path}")
        try:
            wait_until_ready(
                state.url,
                timeout_s=timeout_s,
                still_starting=lambda: _server_alive(state.pid),
                health_path="/api/health",
                server="the local Prefect server",
            )
        except ServingError as error:
            raise PrefectServerError(f"{error}; see {self.log_path}") from error
        return state

    def stop(self) -> PrefectServerState | None:
        """Stop the server, if it runs, and return what it was."""
        with self._lock():
            state = self.current()
            if state is None:
                return None
            stop_process_group(state.pid)
            self.state_path.unlink(missing_ok=True)
            return state

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Two commands starting at the same moment: the second waits here, then finds the first's server.
        with exclusive_lock(self.lock_path):
            yield


def _server_alive(pid: int) -> bool:
    """Whether ``pid`` runs and is a Prefect server (a recycled pid of another program is not)."""
    return process_alive(pid, command_marker="prefect")


def use_local_prefect_server(settings: Settings) -> LocalPrefectServer | None:
    """Start (or find) the local Prefect server and point this process's Prefect at it.

    Call before Prefect is imported: it reads PREFECT_API_URL once. Starting returns at once, so
    the imports after it overlap the server's start; call ``wait_ready()`` before the first flow.
    Calling it again is harmless.

    Returns:
        The server, or None where Prefect is pointed elsewhere: the appliance's server (compose
        runtime) or a PREFECT_API_URL the user (or a test harness) set.
    """
    if settings.runtime != "local":
        return None
    server = LocalPrefectServer(settings)
    chosen = os.environ.get("PREFECT_API_URL")
    if chosen and chosen != server.api_url:
        return None
    server.start()
    os.environ["PREFECT_API_URL"] = server.api_url
    return server
