"""`onebox simulate`: held-out traffic, with drift, to a real served model over HTTP."""

from __future__ import annotations

import re

import numpy as np
import pytest

from flows.simulate import held_out_images, send_traffic, served_model
from storage.errors import ServingError
from storage.settings import Settings
from tests.conftest import TrainedPipeline
from tests.flows.test_cli import onebox, two_models

SUMMARY = re.compile(
    r"sent (\d+) images \(drift: (\w+)\) to digits v\d+: (\d+) answered \((\d+)% right\), (\d+) failed"
)


def test_an_unknown_model_is_one_line(settings: Settings) -> None:
    two_models(settings)
    done = onebox(settings, "simulate", "--model", "nope")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: unknown model 'nope'; known models: digits, parts"
    assert "Traceback" not in done.stdout + done.stderr


def test_a_model_that_is_not_served_is_one_line(settings: Settings) -> None:
    two_models(settings)  # registered, never served
    done = onebox(settings, "simulate", "--model", "digits", "--count", "3")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: model digits is not served; start it with: onebox serve --model digits"


@pytest.mark.parametrize(
    ("args", "named"),
    [(("--count", "0"), "--count"), (("--count", "100001"), "--count"), (("--drift", "sepia"), "'sepia'")],
    ids=["count-0", "count-too-many", "unknown-drift"],
)
def test_out_of_range_options_are_usage_errors(settings: Settings, args: tuple[str, ...], named: str) -> None:
    done = onebox(settings, "simulate", "--model", "digits", *args, columns=200)
    assert done.returncode == 2
    assert named in done.stderr
    assert "Traceback" not in done.stderr


def test_send_traffic_refuses_a_count_out_of_range() -> None:
    from flows.simulate import HeldOut

    held_out = HeldOut("d:v", np.zeros((1, 1, 8, 8), np.uint8), np.zeros(1, np.int64), ("0",))
    with pytest.raises(ValueError, match="count must be 1 to 100000, not 0"):
        send_traffic(None, held_out, drift="none", count=0, rng=np.random.default_rng(0))  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_images_are_the_ones_the_served_version_did_not_train_on(trained: TrainedPipeline) -> None:
    from flows.prepare import split_dataset
    from storage.datasets import open_images, resolve_dataset

    settings, result = trained.settings, trained.result
    held_out = held_out_images(settings, "digits", result.model_version)
    version = resolve_dataset("digits", result.dataset.split(":")[1], settings)
    images = open_images(version)
    try:
        split = split_dataset(images, seed=0)  # the fixture's run used seed 0
        assert len(held_out.labels) == len(split.validation) + len(split.test)
        expected = np.sort(np.concatenate([split.validation.indexes, split.test.indexes]))
        assert np.array_equal(held_out.images, images.read_many(expected))
        assert not set(expected) & set(split.train.indexes)
    finally:
        images.close()


@pytest.mark.slow
def test_clean_traffic_is_answered_and_mostly_right_and_drift_is_not(trained: TrainedPipeline) -> None:
    settings = trained.settings
    clean = onebox(settings, "simulate", "--model", "digits", "--count", "150", "--seed", "1", columns=300)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    sent, drift, answered, right, failed = SUMMARY.search(clean.stdout).groups()  # type: ignore[union-attr]
    assert (sent, drift, answered, failed) == ("150", "none", "150", "0")
    assert int(right) >= 85
    assert len(re.findall(r"\b\d \d+", clean.stdout.split("labels:")[1])) >= 8  # most of the 10 digits came back

    inverted = onebox(settings, "simulate", "--model", "digits", "--drift", "invert", "--count", "150", columns=300)
    assert inverted.returncode == 0, inverted.stdout + inverted.stderr
    _, drift, answered, right, _ = SUMMARY.search(inverted.stdout).groups()  # type: ignore[union-attr]
    assert (drift, answered) == ("invert", "150")
    assert int(right) < 50  # the model never saw a white background


@pytest.mark.slow
def test_a_server_that_dies_mid_way_shows_as_failures_not_a_traceback(trained: TrainedPipeline) -> None:
    from serving.local import LocalRuntime

    settings = trained.settings
    state = served_model(settings, "digits")
    held_out = held_out_images(settings, "digits", state.model_version)
    runtime = LocalRuntime(settings)

    def stop_after_first_batch(sent: int) -> None:
        if sent == 64:
            runtime.stop()

    try:
        summary = send_traffic(
            state, held_out, drift="noise", count=100, rng=np.random.default_rng(3), progress=stop_after_first_batch
        )
        assert (summary.sent, summary.answered, summary.failed) == (100, 64, 36)
        assert summary.first_failure is not None
        assert "ConnectError" in summary.first_failure
        with pytest.raises(ServingError, match="model digits is not served"):
            served_model(settings, "digits")
    finally:
        restored = onebox(settings, "serve", "--model", "digits")
        assert restored.returncode == 0, restored.stdout + restored.stderr
