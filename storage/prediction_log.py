"""The prediction log: what production saw, one record per answered image, readable by the flows.

Layout, one folder per model under ``$ONEBOX_HOME/predictions/NAME/``:

- ``records/YYYYMMDD/WRITER.jsonl``: one JSON object a line (:class:`PredictionRecord`), appended
  in batches by one writer (a server worker process: WRITER names the host, pid and start time),
  so no two processes ever write one file and no lock is needed;
- ``images/AB/SHA256.EXT``: the uploaded bytes, by content (AB: the digest's first two characters),
  kept when the setting says so, within a size cap and a retention period.

The serving side (serving/prediction_log.py) queues records off the request path and writes them
with :func:`append_records`; the drift check and the labeling inbox read them with
:func:`read_records`. Nothing here imports numpy, ONNX Runtime or BentoML (orjson encodes a
record's numpy rows as they are, without a list of Python floats first).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

import orjson

RECORDS_FOLDER = "records"
IMAGES_FOLDER = "images"


@dataclass(frozen=True)
class PredictionRecord:
    """One prediction as logged."""

    time: str  # ISO 8601, UTC
    model: str
    version: str
    request_id: str
    sha256: str  # of the input as sent (the encoded image, or the pixel array's bytes)
    label: str
    confidence: float
    # In the model's class order. Read back: tuples; the writer passes numpy rows (float64).
    probabilities: Sequence[float]
    embedding: Sequence[float] | None  # the final linear layer's input; None: the model has none
    image: str | None = None  # path of the kept input, relative to the model's folder; None: not kept

    def to_json(self) -> bytes:
        """One line of JSON (UTF-8), without the newline."""
        # A shallow dict: asdict() deep-copies every float of the embedding first. orjson writes
        # the numpy rows directly: the standard library's encoder over tuples of floats was 6x slower
        # (benchmarks/prediction_log.py), the largest part of the writer's time.
        record = {name: getattr(self, name) for name in _RECORD_FIELDS}
        return orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def from_json(cls, line: str | bytes) -> PredictionRecord:
        raw = orjson.loads(line)
        raw["probabilities"] = tuple(raw["probabilities"])
        if raw.get("embedding") is not None:
            raw["embedding"] = tuple(raw["embedding"])
        return cls(**raw)


_RECORD_FIELDS = tuple(spec.name for spec in fields(PredictionRecord))


def model_log_dir(predictions_dir: Path, model: str) -> Path:
    return predictions_dir / model


def image_path(predictions_dir: Path, model: str, sha256: str, extension: str) -> Path:
    """Where an input with this digest is kept (``extension`` without the dot: png, jpg, npy ...)."""
    return model_log_dir(predictions_dir, model) / IMAGES_FOLDER / sha256[:2] / f"{sha256}.{extension}"


def append_records(predictions_dir: Path, writer: str, records: Iterable[PredictionRecord]) -> int:
    """Append records to each one's model and day file of ``writer``; returns how many were written.

    Raises:
        OSError: the folder cannot be written (a full disk, no permission): the caller counts the
            records as dropped.
    """
    by_day: dict[tuple[str, str], list[bytes]] = {}  # (model, YYYYMMDD): lines (a path per record cost more)
    for record in records:
        by_day.setdefault((record.model, record.time[:10].replace("-", "")), []).append(record.to_json())
    by_file = {
        model_log_dir(predictions_dir, model) / RECORDS_FOLDER / day / f"{writer}.jsonl": lines
        for (model, day), lines in by_day.items()
    }
    for path, lines in by_file.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        # One write of whole lines: a reader never sees half a record unless the writer dies mid-write.
        with path.open("ab") as handle:
            handle.write(b"\n".join(lines) + b"\n")
    return sum(len(lines) for lines in by_file.values())


def record_files(predictions_dir: Path, model: str) -> list[Path]:
    """The model's record files, oldest day first."""
    root = model_log_dir(predictions_dir, model) / RECORDS_FOLDER
    return sorted(root.glob("*/*.jsonl"), key=lambda path: (path.parent.name, path.name))


def read_records(
    predictions_dir: Path,
    model: str,
    *,
    version: str | None = None,
    limit: int | None = None,
    since: datetime | None = None,
) -> list[PredictionRecord]:
    """The model's logged predictions, oldest first: the newest ``limit`` of them (all: None),
    of one version only when ``version`` is given, none older than ``since``.

    A line a dying writer left half-written is skipped, not an error.
    """
    records: list[PredictionRecord] = []
    for path in record_files(predictions_dir, model):
        if since is not None and path.parent.name < since.astimezone(UTC).strftime("%Y%m%d"):
            continue
        with path.open("rb") as handle:
            for line in handle:
                try:
                    record = PredictionRecord.from_json(line)
                except (ValueError, TypeError, KeyError):  # orjson.JSONDecodeError is a ValueError
                    continue
                if version is not None and record.version != version:
                    continue
                if since is not None and datetime.fromisoformat(record.time) < since:
                    continue
                records.append(record)
    records.sort(key=lambda record: record.time)
    return records[-limit:] if limit else records


def writer_name() -> str:
    """This process's writer name: host, pid and start time, unique across restarts and containers."""
    started = datetime.now(UTC).strftime("%H%M%S%f")
    return f"{os.uname().nodename}-{os.getpid()}-{started}"
