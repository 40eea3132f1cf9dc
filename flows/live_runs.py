"""Trainings in progress, each a record its own process holds locked: a dead one is told apart at once.

A training writes ``$ONEBOX_HOME/run/trainings/FLOW_RUN_ID.json`` (its flow run, process, MLflow
run and ``gpu`` lease) and holds an exclusive ``flock`` on it until it ends. The kernel drops the
lock of a process that dies, SIGKILL included, so a record whose lock can be taken belongs to a
training that will never clean up after itself: :func:`claim_dead` hands it to the caller, who
releases what it held (``flows/abandoned.py``). No pid is compared, so a recycled pid cannot
fool it, and the worker container sees the host's locks through the same mounted home.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from storage.settings import Settings


@dataclass(frozen=True)
class TrainingRecord:
    flow_run_id: str
    flow_run_name: str = ""
    pid: int = 0
    host: str = ""
    started: str = ""
    mlflow_run_id: str | None = None
    lease_id: str | None = None  # the `gpu` slot's lease while the training holds it

    def describe(self) -> str:
        name = self.flow_run_name or self.flow_run_id
        return f"flow run {name} (pid {self.pid} on {self.host}, since {self.started})"


def records_dir(settings: Settings) -> Path:
    return settings.run_dir / "trainings"


class LiveTraining:
    """This process's record, locked while it lives; :meth:`update` rewrites it in place."""

    def __init__(self, handle: IO[str], path: Path, record: TrainingRecord) -> None:
        self._handle, self.path, self.record = handle, path, record

    def update(self, **changes: Any) -> None:
        self.record = replace(self.record, **changes)
        # Rewritten through the locked handle: a rename would leave the lock on the old file.
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(json.dumps(asdict(self.record), indent=2))
        self._handle.flush()


@contextlib.contextmanager
def claim(settings: Settings, *, flow_run_id: str | None, flow_run_name: str = "") -> Iterator[LiveTraining]:
    """Hold this training's record for the block; it is removed when the block ends, whatever ends it."""
    folder = records_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    record = TrainingRecord(
        flow_run_id=flow_run_id or f"no-flow-run-{uuid.uuid4().hex[:12]}",
        flow_run_name=flow_run_name,
        pid=os.getpid(),
        host=platform.node(),
        started=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    path = folder / f"{record.flow_run_id}.json"
    # Locked under a name the scan skips, then renamed: a scan never finds it unlocked and empty.
    hidden = folder / f".{record.flow_run_id}.{os.getpid()}.tmp"
    with hidden.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        live = LiveTraining(handle, path, record)
        live.update()
        os.replace(hidden, path)
        try:
            yield live
        finally:
            path.unlink(missing_ok=True)  # before the lock goes: no one finds it dead


def held_by_others(settings: Settings) -> list[TrainingRecord]:
    """The records of trainings alive now (their lock is held), this process's own excluded."""
    alive = []
    for path in _record_paths(settings):
        with contextlib.suppress(OSError), path.open() as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                record = _read(path)
                if record is not None and record.pid != os.getpid():
                    alive.append(record)
                continue
            fcntl.flock(handle, fcntl.LOCK_UN)
    return alive


@contextlib.contextmanager
def claim_dead(settings: Settings) -> Iterator[list[TrainingRecord]]:
    """The records whose training died, locked by this process for the block, then removed.

    Two processes recovering at once never get the same record: the lock decides. A block left
    by an exception keeps the records for the next try.
    """
    claimed: list[tuple[IO[str], Path, TrainingRecord]] = []
    settled = False
    try:
        for path in _record_paths(settings):
            try:
                handle = path.open()
            except OSError:
                continue  # its training ended meanwhile
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()  # alive
                continue
            if os.fstat(handle.fileno()).st_nlink == 0:
                handle.close()  # ended (or recovered by another process) between the listing and the lock
                continue
            record = _read(path) or TrainingRecord(flow_run_id=path.stem)
            claimed.append((handle, path, record))
        yield [record for _, _, record in claimed]
        settled = True
    finally:
        for held, path, _ in claimed:
            if settled:  # a recovery that failed (the server did not answer) is tried again by the next run
                path.unlink(missing_ok=True)
            held.close()


def _record_paths(settings: Settings) -> list[Path]:
    folder = records_dir(settings)
    return sorted(folder.glob("[!.]*.json")) if folder.is_dir() else []


def _read(path: Path) -> TrainingRecord | None:
    """The record, or None when it cannot be read (a process killed while writing it)."""
    try:
        fields = json.loads(path.read_text())
        known = {name for name in TrainingRecord.__dataclass_fields__}
        return TrainingRecord(**{key: value for key, value in fields.items() if key in known})
    except (OSError, ValueError, TypeError):
        return None
