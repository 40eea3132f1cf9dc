from __future__ import annotations

from flows.evaluate import Evaluation
from flows.promote import decide_promotion


def evaluation(accuracy: float) -> Evaluation:
    return Evaluation(accuracy, accuracy, {"a": accuracy}, {"a": accuracy}, [[1]], ("a",))


def test_first_model_is_promoted() -> None:
    decision = decide_promotion(
        challenger_version="1",
        challenger=evaluation(0.5),
        production_version="",
        production=None,
        note="no production model yet",
        min_improvement=0.0,
    )
    assert decision.promote
    assert "no production model yet" in decision.reason


def test_better_challenger_is_promoted_and_worse_kept_out() -> None:
    better = decide_promotion(
        challenger_version="2",
        challenger=evaluation(0.97),
        production_version="1",
        production=evaluation(0.95),
        note="",
        min_improvement=0.01,
    )
    worse = decide_promotion(
        challenger_version="2",
        challenger=evaluation(0.955),
        production_version="1",
        production=evaluation(0.95),
        note="",
        min_improvement=0.01,
    )
    assert better.promote
    assert better.production_accuracy == 0.95
    assert not worse.promote
    assert worse.reason.startswith("kept production")
    assert "needed +0.0100" in worse.reason


def test_negative_minimum_forces_promotion() -> None:
    decision = decide_promotion(
        challenger_version="2",
        challenger=evaluation(0.5),
        production_version="1",
        production=evaluation(0.9),
        note="",
        min_improvement=-1.0,
    )
    assert decision.promote


def test_incomparable_production_is_replaced_with_the_reason() -> None:
    decision = decide_promotion(
        challenger_version="2",
        challenger=evaluation(0.5),
        production_version="1",
        production=None,
        note="production v1 was trained on other classes",
        min_improvement=0.0,
    )
    assert decision.promote
    assert "other classes" in decision.reason
