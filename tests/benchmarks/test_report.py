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


def cli_results(quick_s: float, served_s: float) -> dict:
    commands = [
        {"command": "onebox status", "runs_s": [quick_s], "median_s": quick_s, "target_s": 1.0, "load_1min": 0.5},
        {"command": "onebox report nosuchrun", "runs_s": [2.0], "median_s": 2.0, "target_s": None, "load_1min": 0.5},
    ]
    trials = {"served_s": [served_s], "command_s": [served_s + 3], "load_1min": [0.5],
              "median_served_s": served_s, "median_command_s": served_s + 3}  # fmt: skip
    return {"date": "2026-12-01T00:00:00+00:00", "bytecode": True, "rounds": 1, "commands": commands,
            "train": {"target_s": 25.0, "cold": trials, "warm": trials}}  # fmt: skip


@pytest.mark.parametrize(("quick_s", "served_s", "expected"), [(0.6, 20.0, "met"), (1.5, 30.0, "**missed**")])
def test_cli_targets_are_judged_the_untargeted_only_shown(quick_s: float, served_s: float, expected: str) -> None:
    data = {"cli": cli_results(quick_s, served_s), "cli-before": cli_results(9.0, 50.0)}
    targets = report.targets_table(data)
    judged = [line for line in targets if "onebox" in line]
    assert len(judged) == 3  # status; train cold and warm; not the untargeted report
    assert all(line.endswith(f"| {expected} |") for line in judged)
    table = "\n".join(report.other_tables(data))
    assert "`onebox report nosuchrun` | 2.0 (load 0.5) | 2.0 (load 0.5) |" in table
    assert f"| 50.0 / 53.0 (load 0.5-0.5) | {served_s} / {served_s + 3} (load 0.5-0.5) |" in table


def prediction_log_results(cpu_on: float, missing: int) -> dict:
    side = {"requests": 900, "errors": 0, "rps": 300.0, "p50_ms": 20.0, "p99_ms": 60.0}
    runs = [
        {
            "connections": connections,
            "log_on": {**side, "server_cpu_ms_per_request": cpu_on},
            "log_off": {**side, "server_cpu_ms_per_request": 1.0},
            "cpu_per_request_on_vs_off": round(cpu_on, 3),
            "rps_on_vs_off": 1.0,
        }
        for connections in (8, 64)
    ]
    return {
        "model": "bench",
        "worker_processes": 1,
        "rounds": 3,
        "seconds_per_run": 3.0,
        "runs": runs,
        "records": {"answered_at_least": 1700, "on_disk": 1800, "missing": missing, "dropped": 0},
        "writer_unique_inputs": {
            "records": 200,
            "written": 200,
            "submit_us_per_record": 2.0,
            "writer_us_per_record": 800,
        },
    }


@pytest.mark.parametrize(
    ("cpu_on", "missing", "expected"), [(1.05, 0, ["met", "met", "met"]), (1.2, 3, ["**missed**"] * 3)]
)
def test_the_prediction_log_targets_are_judged_and_its_figures_shown(
    cpu_on: float, missing: int, expected: list[str]
) -> None:
    results = prediction_log_results(cpu_on, missing)
    rows = [line for line in report.targets_table({"prediction_log": results}) if "prediction" in line]
    assert [line.rsplit(" | ", 1)[1].removesuffix(" |") for line in rows] == expected
    assert f"| {cpu_on - 1:+.1%} |" in rows[0]
    table = report.other_tables({"prediction_log": results})
    assert (
        f"| 8 | 300 · 20.0 / 60.0 ms · {cpu_on:.3f} ms | 300 · 20.0 / 60.0 ms · 1.000 ms | {round(cpu_on, 3)}x |"
        in table
    )


def test_the_suite_runs_the_stages_it_is_given_and_names_the_unknown_one(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.suite import STAGES, parse_stages

    assert parse_stages([]) == set(STAGES)
    assert parse_stages(["--only", "serving, prediction_log"]) == {"serving", "prediction_log"}
    with pytest.raises(SystemExit):
        parse_stages(["--only", "serving,severing"])
    assert "unknown stage severing" in capsys.readouterr().err
