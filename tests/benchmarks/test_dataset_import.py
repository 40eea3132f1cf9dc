"""The import benchmark at a tiny size: it runs, measures a child process, and its rows judge the target."""

from __future__ import annotations

from pathlib import Path

from benchmarks import report
from benchmarks.dataset_import import import_table, import_targets, measure_import


def test_a_tiny_import_benchmark_measures_and_reports(tmp_path: Path) -> None:
    results = measure_import(images=24, sizes=(16,), cache=tmp_path)
    [run] = results["runs"]
    assert run["images"] == 24
    assert run["image_shape"] == [3, 16, 16]
    assert 20 < run["peak_rss_mib"] < 1000
    assert run["images_per_s"] > 0
    assert len(list((tmp_path / "photos-24").rglob("*.jpg"))) == 24
    [(label, measured, met)] = import_targets(results)
    assert "24 photos at 16x16" in label
    assert met is True
    assert measured.endswith("MiB")
    assert any("| 16x16 |" in line for line in import_table(results))
    rows = report.targets_table({"dataset_import": {**results, "runs": [{**run, "peak_rss_mib": 1500.0}]}})
    assert rows[-1].endswith("| **missed** |")
