"""The benchmark summary: targets judged from the figures, README's part replaced between markers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import report


def serving_results(gateway_rps: float, gateway_p99: float) -> dict:
    runs = []
    for connections in (1, 8, 64):
        for server, request, rps, p99 in [
            ("onebox-gateway", "image", gateway_rps, gateway_p99),
            ("flask-gunicorn", "image", 1000.0, 20.0),
            ("onebox-gateway", "json", gateway_rps, gateway_p99),
            ("mlflow-serve", "json", 500.0, 40.0),
        ]:
            runs.append({
                "server": server, "request": request, "endpoint": "predict", "connections": connections,
                "requests": 100, "errors": 0, "rps": rps, "p50_ms": 1.0, "p99_ms": p99,
            })  # fmt: skip
    from benchmarks.serving import ratios

    return {
        "worker_processes": 2,
        "load_generator": "wrk",
        "seconds_per_run": 3,
        "rounds": 3,
        "runs": runs,
        "in_process": {"processes": 2, "png_decode_and_predict_per_s": 9, "model_only_per_s": 99},
        "ratios": ratios(runs),
    }


@pytest.mark.parametrize(("rps", "p99", "expected"), [(2000.0, 10.0, "met"), (1200.0, 30.0, "**missed**")])
def test_targets_are_judged_from_the_ratios(rps: float, p99: float, expected: str) -> None:
    lines = report.targets_table({"serving": serving_results(rps, p99)})

    flask_rows = [line for line in lines if "Flask" in line]
    assert len(flask_rows) == 4  # requests/s and p99, at 8 and at 64 clients
    assert all(line.endswith(f"| {expected} |") for line in flask_rows)


def test_readme_part_between_the_markers_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{report.BEGIN}\nold figures\n{report.END}\n\nafter\n")
    monkeypatch.setattr(report, "README", readme)
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    (tmp_path / "serving.json").write_text(json.dumps(serving_results(2000.0, 10.0)))

    report.main()

    text = readme.read_text()
    assert "old figures" not in text
    assert text.startswith("# title")
    assert text.endswith("after\n")
    assert "requests/s" in text
    assert (tmp_path / "summary.md").is_file()
    assert (tmp_path / "serving.png").is_file()
