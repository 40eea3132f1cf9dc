from pathlib import Path

from storage.prediction_log import PredictionRecord, append_records, read_records, record_files


def record(index: int, *, version: str = "1", model: str = "digits") -> PredictionRecord:
    return PredictionRecord(
        time=f"2026-12-02T00:00:{index:02d}+00:00",
        model=model,
        version=version,
        request_id=f"r{index}",
        sha256=f"{index:064x}",
        label="3",
        confidence=0.9,
        probabilities=(0.1, 0.9),
        embedding=(1.0, -2.5) if index % 2 else None,
    )


def test_records_round_trip_newest_last_and_filtered(tmp_path: Path) -> None:
    written = append_records(tmp_path, "w1", [record(i) for i in range(5)])
    append_records(tmp_path, "w2", [record(9, version="2"), record(7, model="other")])
    assert written == 5
    assert [r.request_id for r in read_records(tmp_path, "digits")] == ["r0", "r1", "r2", "r3", "r4", "r9"]
    assert read_records(tmp_path, "digits", version="1", limit=2) == [record(3), record(4)]
    assert [r.request_id for r in read_records(tmp_path, "other")] == ["r7"]


def test_a_half_written_line_is_skipped(tmp_path: Path) -> None:
    append_records(tmp_path, "w1", [record(1)])
    (path,) = record_files(tmp_path, "digits")
    with path.open("a") as handle:
        handle.write('{"time": "2026-12-02T00:00:05+00:00", "mod')
    assert read_records(tmp_path, "digits") == [record(1)]
