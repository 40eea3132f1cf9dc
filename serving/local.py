"""The local runtime: the model server as a background ``bentoml serve`` process (no Docker).

Its pid, model version and start time are kept in ``$ONEBOX_HOME/run/serving.json`` so any
later ``onebox`` command can report on it or stop it.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from serving.health import STARTUP_FAILED_MARKER, smoke_predict, wait_until_ready
from serving.metadata import MODEL_DIR_VARIABLE, WORKERS_VARIABLE, ModelMetadata
from serving.processes import port_in_use, process_alive, start_process_group, stop_process_group
from serving.runtime import ServerState
from storage.errors import ServingError
from storage.settings import Settings

SERVICE = "serving.service:Classifier"


class LocalRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_path = settings.run_dir / "serving.json"
        self.log_path = settings.run_dir / "serving.log"

    def current(self) -> ServerState | None:
        """The running server's state; a stale state file (process gone) is removed."""
        if not self.state_path.is_file():
            return None
        state = ServerState(**json.loads(self.state_path.read_text()))
        if not process_alive(state.pid, command_marker=SERVICE):  # not a recycled pid
            self.state_path.unlink(missing_ok=True)
            return None
        return state

    def start(self, bundle: Path) -> ServerState:
        """Start serving ``bundle``; returns once it is ready and has answered a smoke prediction.

        Raises:
            ServingError: a server already runs, the port is taken, or the model does not become ready.
        """
        if (running := self.current()) is not None:
            raise ServingError(
                f"model version {running.model_version} is already served (pid {running.pid}); "
                "stop it first with: onebox stop"
            )
        host, port = self.settings.serve_host, self.settings.serve_port
        if port_in_use(host, port):
            raise ServingError(f"port {port} on {host} is used by another program; stop it or set ONEBOX_SERVE_PORT")
        metadata = ModelMetadata.read(bundle / "metadata.json")
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {
            **os.environ,
            MODEL_DIR_VARIABLE: str(bundle),
            WORKERS_VARIABLE: str(self.settings.serve_workers),
            "BENTOML_DO_NOT_TRACK": "true",
        }
        command = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", host, "--port", str(port)]
        process = start_process_group(command, env=env, log_path=self.log_path)
        url = self.settings.serve_url
        state = ServerState(
            pid=process.pid,
            model_name=metadata.model_name,
            model_version=metadata.model_version,
            bundle=str(bundle),
            url=url,
            started=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        try:
            wait_until_ready(
                url,
                timeout_s=self.settings.serve_ready_timeout_s,
                still_starting=lambda: process.poll() is None and not self._startup_failed(log_offset),
            )
            smoke_predict(url, expected_version=metadata.model_version, image_shape=metadata.image_shape)
        except ServingError as error:
            stop_process_group(process.pid)
            raise ServingError(f"{error}; see {self.log_path}") from error
        self.state_path.write_text(json.dumps(asdict(state), indent=2))
        return state

    def stop(self) -> ServerState | None:
        """Stop the running server, if any, and return what it was serving."""
        state = self.current()
        if state is None:
            return None
        stop_process_group(state.pid)
        self.state_path.unlink(missing_ok=True)
        return state

    def deploy(self, bundle: Path) -> ServerState:
        """Serve ``bundle`` instead of whatever serves now; on failure the old model serves again.

        The local runtime stops the old server before starting the new one (one port, one box):
        a short gap in service, unlike the compose runtime's blue/green swap.
        """
        previous = self.stop()
        try:
            return self.start(bundle)
        except ServingError:
            if previous is not None:
                self.start(Path(previous.bundle))
            raise

    def logs(self, *, lines: int = 100) -> str:
        """The last ``lines`` lines of the model server's log."""
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def retire_previous(self) -> None:
        """Nothing to do: a local deploy stops the old server before it starts the new one."""

    def _startup_failed(self, log_offset: int) -> bool:
        # BentoML's supervisor keeps restarting a worker whose model fails to load, so the
        # process lives on; its log says so at once, which saves waiting for the timeout.
        with self.log_path.open("rb") as log:
            log.seek(log_offset)
            return STARTUP_FAILED_MARKER.encode() in log.read()
