"""The prediction log of a model server: every answered image recorded, off the request path.

A request hands its raw results (the probabilities and embeddings as arrays, the upload's bytes
or the pixel array) to a bounded in-process queue, one per worker process, and returns. A
background thread takes what is queued every :data:`FLUSH_INTERVAL_S`, or sooner when the queue
is half full, and does the rest: digests, labels, PNG encoding, JSON, files
(storage.prediction_log.append_records), and the size caps and retention period
(serving/log_retention.py). Nothing here can fail a request: a full queue, a full disk or an
unwritable folder drops records, counted per model and cause (``/metadata``'s
``prediction_log``), with one warning line in the log per cause (then one a minute while it
lasts).

Its settings: serving/log_settings.py.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from serving.log_retention import MB, KeptInputs, enforce_record_limits, png_of, upload_extension
from serving.log_settings import LOG_DIR_VARIABLE, PredictionLogConfig
from serving.metadata import ModelMetadata
from storage.prediction_log import PredictionRecord, append_records, writer_name

FLUSH_INTERVAL_S = 0.25
CHUNK = 64  # requests written at a time, with a pause between (about 1.5 ms of work each)
PAUSE_S = 0.0005
RETENTION_INTERVAL_S = 60.0
WARNING_INTERVAL_S = 60.0
DECIMALS = 6  # of probabilities and embeddings in a record: enough for the drift tests, half the JSON
logger = logging.getLogger("onebox.prediction_log")


@dataclass
class LogCounts:
    """What the log did with one model's predictions, in this worker since it started."""

    written: int = 0
    dropped_queue_full: int = 0
    dropped_unwritable: int = 0
    inputs_kept: int = 0
    inputs_not_kept: int = 0  # the record is written with image None
    last_error: str = ""


@dataclass(frozen=True, slots=True)
class Pending:
    """One request's results, as the request path left them: no digest, no JSON, no file yet."""

    model: str
    request_id: str
    at: float  # time.time()
    probabilities: np.ndarray  # (N, K)
    embeddings: np.ndarray | None  # (N, D)
    upload: bytes | None  # /predict: the bytes as sent (one image)
    pixels: np.ndarray | None  # /predict_batch: the model's uint8 input (N, C, H, W)


@dataclass
class PredictionLog:
    """One worker's log of every model it serves: a bounded queue and the thread that writes it."""

    config: PredictionLogConfig
    models: Mapping[str, ModelMetadata]
    flush_interval_s: float = FLUSH_INTERVAL_S
    retention_interval_s: float = RETENTION_INTERVAL_S
    counts: dict[str, LogCounts] = field(init=False)
    writer: str = field(init=False, default_factory=writer_name)

    def __post_init__(self) -> None:
        self.counts = {name: LogCounts() for name in self.models}
        self._lock = threading.Lock()
        self._queue: list[Pending] = []
        self._queued = 0  # records (images) in the queue
        self._wake = threading.Event()
        self._stopping = False
        self._warned: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        self.writer_cpu_s = 0.0  # the writer thread's CPU time so far (what the log costs, beside the queue)
        directory = self.config.directory or Path()
        self.inputs = KeptInputs(
            directory, max_bytes=int(self.config.kept_inputs_max_mb * MB), days=self.config.prediction_log_days
        )

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def start(self) -> PredictionLog:
        """Start the writer thread (none when the log is off); it is flushed when the process exits."""
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="onebox-prediction-log", daemon=True)
            self._thread.start()
            atexit.register(self.close)
        return self

    # The request path: a lock, a list append, no I/O.

    def submit_upload(self, model: str, request_id: str, upload: bytes, probabilities: np.ndarray,
                      embeddings: np.ndarray | None) -> None:  # fmt: skip
        """Queue the record of one uploaded image (its bytes as sent are kept, when kept)."""
        if self.config.enabled:
            self._submit(Pending(model, request_id, time.time(), probabilities, embeddings, upload, None))

    def submit_batch(self, model: str, request_id: str, pixels: np.ndarray, probabilities: np.ndarray,
                     embeddings: np.ndarray | None) -> None:  # fmt: skip
        """Queue the records of a batch of pixel arrays (each kept as a PNG, when kept)."""
        if self.config.enabled:
            self._submit(Pending(model, request_id, time.time(), probabilities, embeddings, None, pixels))

    def _submit(self, pending: Pending) -> None:
        count = len(pending.probabilities)
        with self._lock:
            if self._queued + count > self.config.prediction_log_queue:
                self.counts[pending.model].dropped_queue_full += count
                full = True
            else:
                self._queue.append(pending)
                self._queued += count
                full = False
                if self._queued * 2 >= self.config.prediction_log_queue:
                    self._wake.set()  # half full: write now rather than at the next tick
        if full:
            self._warn("queue", f"prediction log queue full ({self.config.prediction_log_queue} records): dropping")

    # What /metadata shows.

    def stats(self, model: str) -> dict[str, Any]:
        """The log's state for ``model`` in this worker, for ``/metadata``."""
        if not self.enabled:
            off = "ONEBOX_PREDICTION_LOG is off"
            reason = off if not self.config.prediction_log else f"{LOG_DIR_VARIABLE} is not set"
            return {"enabled": False, "reason": reason}
        counts = asdict(self.counts[model])
        dropped = counts["dropped_queue_full"] + counts["dropped_unwritable"]
        return {
            "enabled": True,
            "keep_inputs": self.config.keep_inputs,
            "writer": self.writer,
            "queue_bound": self.config.prediction_log_queue,
            "queued": self._queued,
            "writer_cpu_s": round(self.writer_cpu_s, 3),
            "dropped": dropped,
            **counts,
        }

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued so far is written (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._queued and self._thread is not None and self._thread.is_alive():
            self._wake.set()
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Write what is queued and stop the thread (at exit: a few seconds at most)."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=5)
        self._thread = None

    # The writer thread.

    def _run(self) -> None:
        last_retention = -float("inf")  # limits first: a restart may find a folder over them
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            stopping = self._stopping
            with self._lock:
                taken, self._queue = self._queue, []
            try:
                if taken:
                    self._write(taken)
                if time.monotonic() - last_retention >= self.retention_interval_s:
                    last_retention = time.monotonic()
                    self._enforce_limits()
            except Exception as error:  # the thread must outlive anything a disk can do to it
                self._warn("writer", f"prediction log writer: {error!r}")
            finally:
                with self._lock:
                    self._queued -= sum(len(pending.probabilities) for pending in taken)
                self.writer_cpu_s = time.thread_time()
            if stopping:
                return

    def _write(self, taken: list[Pending]) -> None:
        by_model: dict[str, list[Pending]] = {}
        for pending in taken:
            by_model.setdefault(pending.model, []).append(pending)
        assert self.config.directory is not None
        chunks = [(model, pendings[i : i + CHUNK]) for model, pendings in by_model.items()
                  for i in range(0, len(pendings), CHUNK)]  # fmt: skip
        for number, (model, pendings) in enumerate(chunks):
            if number:
                # The request threads' turn: a writer holding the GIL for a whole flush showed as
                # a longer p99 (the interpreter hands it over only every 5 ms).
                time.sleep(PAUSE_S)
            records = self._records(model, pendings)
            try:
                append_records(self.config.directory, self.writer, records)
            except OSError as error:
                counts = self.counts[model]
                counts.dropped_unwritable += len(records)
                counts.last_error = f"records not written: {error}"
                self._warn(f"records-{model}", f"prediction log of {model}: {counts.last_error}; dropping")
            else:
                self.counts[model].written += len(records)

    def _records(self, model: str, pendings: list[Pending]) -> list[PredictionRecord]:
        """The records of one model's queued requests. Their arrays are rounded in one numpy call
        each, not per request: at a request an image, numpy's cost per call was what showed."""
        meta = self.models[model]
        probabilities = np.round(np.concatenate([p.probabilities for p in pendings]).astype(np.float64), DECIMALS)
        rows = [p.embeddings.reshape(len(p.embeddings), -1) for p in pendings if p.embeddings is not None]
        embeddings = None
        if len(rows) == len(pendings):  # one model: all or none of its requests have them
            embeddings = np.round(np.concatenate(rows).astype(np.float64), DECIMALS)
        best = probabilities.argmax(axis=1)
        records = []
        index = 0
        for pending in pendings:
            when = datetime.fromtimestamp(pending.at, UTC).isoformat()
            for row in range(len(pending.probabilities)):
                sha256, image = self._input(pending, row)
                records.append(
                    PredictionRecord(
                        time=when,
                        model=model,
                        version=meta.model_version,
                        request_id=pending.request_id,
                        sha256=sha256,
                        label=meta.classes[int(best[index])],
                        confidence=float(probabilities[index, best[index]]),
                        probabilities=probabilities[index],
                        embedding=None if embeddings is None else embeddings[index],
                        image=image,
                    )
                )
                index += 1
        return records

    def _input(self, pending: Pending, row: int) -> tuple[str, str | None]:
        """The input's digest, and where it is kept (None: not kept)."""
        if pending.upload is not None:
            data, extension = pending.upload, upload_extension(pending.upload)
            sha256 = hashlib.sha256(data).hexdigest()
            encoded = lambda: data  # noqa: E731 -- the bytes as sent
        else:
            assert pending.pixels is not None
            pixels = np.ascontiguousarray(pending.pixels[row])
            sha256, extension = hashlib.sha256(pixels.tobytes()).hexdigest(), "png"
            encoded = lambda: png_of(pixels)  # noqa: E731 -- encoded only when not kept yet
        if not self.config.keep_inputs:
            return sha256, None
        counts = self.counts[pending.model]
        try:
            image = self.inputs.keep(pending.model, sha256, extension, encoded)
        except OSError as error:
            counts.inputs_not_kept += 1
            counts.last_error = f"input not kept: {error}"
            self._warn(f"inputs-{pending.model}", f"prediction log of {pending.model}: {counts.last_error}")
            return sha256, None
        if image is None:
            counts.inputs_not_kept += 1
        else:
            counts.inputs_kept += 1
        return sha256, image

    def _enforce_limits(self) -> None:
        assert self.config.directory is not None
        for model in self.models:
            try:
                enforce_record_limits(
                    self.config.directory,
                    model,
                    max_bytes=int(self.config.prediction_log_max_mb * MB),
                    days=self.config.prediction_log_days,
                )
                if self.config.keep_inputs:
                    self.inputs.enforce(model)
            except OSError as error:
                self._warn(f"limits-{model}", f"prediction log of {model}: cannot enforce its limits: {error}")

    def _warn(self, cause: str, message: str) -> None:
        """One warning line per cause, then at most one a minute while it lasts."""
        now = time.monotonic()
        if now - self._warned.get(cause, -WARNING_INTERVAL_S) >= WARNING_INTERVAL_S:
            self._warned[cause] = now
            logger.warning("%s (counted in /metadata prediction_log)", message)
