"""One summary of a run, whether it ran here (a PipelineResult) or on the worker (its MLflow record)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from flows.pipeline import PipelineResult
from flows.promote import GateDecision
from flows.run_record import RunRecord, RunSummary

REASON = "promoted: no production model yet; accuracy 0.9500"


def test_a_result_and_its_mlflow_record_print_the_same_table() -> None:
    decision = GateDecision(promote=True, reason=REASON, challenger_version="3", challenger_accuracy=0.95)
    result = PipelineResult(
        run_id="abc",
        model_name="onebox-classifier",
        model_version="3",
        dataset="digits:0ee426a8fa73",
        test_accuracy=0.95,
        test_macro_f1=0.94,
        device="cpu",
        decision=decision,
        served_url=None,
    )
    # What tracking logs for that run, as read_run returns it.
    record = RunRecord(
        run_id="abc",
        run_name="digits-seed0",
        started=datetime(2026, 1, 1, tzinfo=UTC),
        ended=None,
        params={"device_used": "cpu", "epochs": "15"},
        metrics={"test_accuracy": 0.95, "test_macro_f1": 0.94},
        tags={"onebox.model_version": "3", "onebox.dataset": "digits:0ee426a8fa73", "onebox.gate_reason": REASON},
    )

    assert RunSummary.from_record(record, model_name="onebox-classifier") == result.summary
    assert dict(result.summary.rows())["test accuracy"] == "0.9500 (macro-F1 0.9400) on cpu"


def test_a_record_that_logged_little_still_summarizes() -> None:
    record = RunRecord("abc", "x", datetime(2026, 1, 1, tzinfo=UTC), None, params={}, metrics={}, tags={})
    summary = RunSummary.from_record(record, model_name="m")
    assert (summary.model, summary.dataset, summary.gate) == ("m v?", "?", "-")
    assert math.isnan(summary.test_accuracy)
