"""The local runtime: every served model in one background ``bentoml serve`` process (no Docker).

One process serves all models (serving/model_routes.py routes ``/models/NAME/...``); a deploy
or a stop restarts it with the new set of bundles, a short gap in service that the appliance's
blue/green swap does not have. What serves is kept in ``$ONEBOX_HOME/run/serving.json``: the
process, and each model's bundle in the order first served, so any later ``onebox`` command can
report on it or stop it, and a deploy after a crash brings back every model, not just the new one.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.health import STARTUP_FAILED_MARKER, smoke_predict, wait_until_ready
from serving.log_settings import LOG_DIR_VARIABLE, log_environment
from serving.metadata import DEFAULT_MODEL_VARIABLE, METADATA_FILE, MODEL_DIR_VARIABLE, WORKERS_VARIABLE, ModelMetadata
from serving.processes import port_in_use, process_alive, start_process_group, stop_process_group
from serving.runtime import ServerState
from storage.errors import ServingError
from storage.locks import exclusive_lock
from storage.settings import Settings

SERVICE = "serving.service:Classifier"
# Every process of a home's model server carries its state file's path. BentoML starts each worker
# in a session of its own, so a worker outlives a SIGKILLed server, still serving the old models
# on the port: the next start finds it by this and stops it.
SERVER_TAG_VARIABLE = "ONEBOX_SERVING_STATE"


class LocalRuntime:
    """Implements :class:`serving.runtime.Runtime` with one local model server process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state_path = settings.run_dir / "serving.json"
        self.lock_path = settings.run_dir / "serving.lock"
        self.log_path = settings.run_dir / "serving.log"

    def served(self) -> list[ServerState]:
        """Every model the running server serves, in the order each was first served; [] when it is not running."""
        pid, states = self._recorded()
        return states if pid and process_alive(pid, command_marker=SERVICE) else []  # not a recycled pid

    def current(self, model_name: str) -> ServerState | None:
        """What serves ``model_name`` now."""
        return next((state for state in self.served() if state.model_name == model_name), None)

    def deploy(self, bundle: Path) -> ServerState:
        """Serve ``bundle`` as the model its metadata names, beside the other models, replacing that
        model's version; the server restarts with the whole set.

        Raises:
            ServingError: the new set did not become ready or a model did not answer its smoke
                prediction; the server is back on the old set (or stopped, if there was none).
        """
        metadata = ModelMetadata.read(bundle / METADATA_FILE)
        new = self._state(metadata, bundle)
        with self._locked():
            _, old = self._recorded()
            old = [state for state in old if Path(state.bundle, METADATA_FILE).is_file()]  # deleted: cannot serve
            names = [state.model_name for state in old]
            wanted = [new if state.model_name == new.model_name else state for state in old]
            if new.model_name not in names:
                wanted.append(new)
            try:
                self._restart(wanted)
            except ServingError:
                if old:
                    self._restart(old)
                raise
        return next(state for state in self.served() if state.model_name == new.model_name)

    def retire_previous(self, model_name: str) -> None:
        """Nothing to do: a local deploy stopped the old version when it restarted the server."""

    def stop(self, model_name: str | None = None) -> list[ServerState]:
        """Stop serving ``model_name`` (the others serve on, after a restart), or every model.

        Returns:
            What was stopped; [] when it was not served.
        """
        with self._locked():
            running = self.served()
            if model_name is None:
                stopped, rest = running, []
            else:
                stopped = [state for state in running if state.model_name == model_name]
                rest = [state for state in running if state.model_name != model_name]
            if not running:  # the server died: nothing serves, but its record says what to bring back
                _, recorded = self._recorded()
                self._stop_process()  # what is left of it, and its record
                self._record(0, [state for state in recorded if model_name and state.model_name != model_name])
                return []
            if stopped:
                self._restart(rest)
        return stopped

    def logs(self, *, model_name: str | None = None, lines: int = 100) -> str:
        """The last ``lines`` lines of the model server's log, which every model shares.

        Raises:
            ServingError: ``model_name`` is not served.
        """
        served = [state.model_name for state in self.served()]
        if model_name is not None and model_name not in served:
            raise ServingError(f"unknown model {model_name!r}; served models: {', '.join(served) or 'none'}")
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _state(self, metadata: ModelMetadata, bundle: Path) -> ServerState:
        return ServerState(
            pid=0,
            model_name=metadata.model_name,
            model_version=metadata.model_version,
            bundle=str(bundle),
            url=f"{self.settings.serve_url}/models/{metadata.model_name}",
            started=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def _restart(self, states: list[ServerState]) -> None:
        """Stop the server, then start it with ``states``' bundles (none: leave it stopped)."""
        self._stop_process()
        if not states:
            return
        host, port = self.settings.serve_host, self.settings.serve_port
        if port_in_use(host, port):
            raise ServingError(f"port {port} on {host} is used by another program; stop it or set ONEBOX_SERVE_PORT")
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        env = {
            **os.environ,
            MODEL_DIR_VARIABLE: os.pathsep.join(state.bundle for state in states),
            WORKERS_VARIABLE: str(self.settings.serve_workers),
            SERVER_TAG_VARIABLE: str(self.state_path),
            **self.settings.input_limits.environment(),  # as set in .env too, not only the environment
            "BENTOML_DO_NOT_TRACK": "true",
            # The settings object's values, not the environment's: a caller may have made its own.
            **log_environment(self.settings.environment()),
            LOG_DIR_VARIABLE: str(self.settings.predictions_dir),
        }
        env.pop(DEFAULT_MODEL_VARIABLE, None)
        if self.settings.default_model:
            env[DEFAULT_MODEL_VARIABLE] = self.settings.default_model
        command = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", host, "--port", str(port)]
        # Its output goes through serving/log_rotation.py, which keeps the log to a few files of
        # bounded size; that process leads the group (its command line names SERVICE too).
        rotated = [sys.executable, "-m", "serving.log_rotation", str(self.log_path), "--", *command]
        process = start_process_group(rotated, env=env, log_path=self.log_path.with_suffix(".rotation.log"))
        try:
            wait_until_ready(
                self.settings.serve_url,
                timeout_s=self.settings.serve_ready_timeout_s,
                still_starting=lambda: process.poll() is None and not self._startup_failed(log_offset),
            )
            for state in states:
                meta = ModelMetadata.read(Path(state.bundle) / METADATA_FILE)
                smoke_predict(state.url, expected_version=meta.model_version, image_shape=meta.image_shape)
        except ServingError as error:
            stop_process_group(process.pid)
            raise ServingError(f"{error}; see {self.log_path}") from error
        self._record(process.pid, states)

    def _record(self, pid: int, states: list[ServerState]) -> None:
        """Write the state file: the server's pid (0: none runs) and its models; none: no file."""
        if states:
            record = {"pid": pid, "models": [asdict(replace(state, pid=pid)) for state in states]}
            self.state_path.write_text(json.dumps(record, indent=2))

    def _stop_process(self) -> None:
        pid, _ = self._recorded()
        if pid and process_alive(pid, command_marker=SERVICE):
            stop_process_group(pid)
        for leftover in self._tagged_processes():  # workers of a server killed with SIGKILL
            stop_process_group(leftover)
        self.state_path.unlink(missing_ok=True)

    def _tagged_processes(self) -> list[int]:
        """The processes of this home's model server that are still running, found by their environment."""
        tag = f"{SERVER_TAG_VARIABLE}={self.state_path}".encode()
        found = []
        for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
            try:
                if entry.name.isdigit() and tag in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue  # gone meanwhile, or not ours to read
        return found

    def _recorded(self) -> tuple[int, list[ServerState]]:
        """The state file's server pid and models, alive or not; (0, []) without one."""
        if not self.state_path.is_file():
            return 0, []
        raw: dict[str, Any] = json.loads(self.state_path.read_text())
        if "models" not in raw:  # written before one server held several models: one ServerState
            state = ServerState(**raw)
            return state.pid, [replace(state, url=f"{self.settings.serve_url}/models/{state.model_name}")]
        return int(raw["pid"]), [ServerState(**entry) for entry in raw["models"]]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # Two commands deploying at once would each restart the server with their own set.
        with exclusive_lock(self.lock_path, waiting="the local model servers"):
            yield

    def _startup_failed(self, log_offset: int) -> bool:
        # BentoML's supervisor keeps restarting a worker whose model fails to load, so the
        # process lives on; its log says so at once, which saves waiting for the timeout.
        try:
            with self.log_path.open("rb") as log:
                # Smaller than when the server started: rotated meanwhile, all of it is new.
                log.seek(log_offset if log.seek(0, os.SEEK_END) >= log_offset else 0)
                return STARTUP_FAILED_MARKER.encode() in log.read()
        except FileNotFoundError:  # the log rotation has not opened it yet
            return False
