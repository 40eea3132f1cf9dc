"""The drift statistics on data whose answer is known: no trained model, fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flows.drift import compare, histogram_test, mmd_permutation_test
from flows.drift_check import check_window
from flows.drift_window import DriftConfig
from flows.reference import Reference
from storage.errors import ModelError
from storage.prediction_log import PredictionRecord

CLASSES = ("a", "b", "c")


def records(probabilities: np.ndarray, embeddings: np.ndarray | None = None) -> list[PredictionRecord]:
    return [
        PredictionRecord(
            time=f"2026-12-01T00:00:{index % 60:02d}+00:00",
            model="m",
            version="1",
            request_id=str(index),
            sha256=f"{index:064x}",
            label=str(int(row.argmax())),
            confidence=float(row.max()),
            probabilities=tuple(map(float, row)),
            embedding=None if embeddings is None else tuple(map(float, embeddings[index])),
        )
        for index, row in enumerate(probabilities)
    ]


def dirichlet(rng: np.random.Generator, count: int, concentration: tuple[float, ...] = (4.0, 1.0, 1.0)) -> np.ndarray:
    return rng.dirichlet(concentration, count).astype(np.float32)


def test_mmd_tells_a_shifted_sample_from_the_same_one() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(200, 5))
    same = mmd_permutation_test(reference, rng.normal(size=(150, 5)), permutations=300, rng=rng)[1]
    shifted = mmd_permutation_test(reference, rng.normal(0.5, size=(150, 5)), permutations=300, rng=rng)[1]
    assert same > 0.05
    assert shifted == pytest.approx(1 / 301)  # the smallest p-value 300 permutations can give


def test_the_histogram_test_takes_classes_empty_in_either_sample() -> None:
    reference = np.array([0] * 50 + [1] * 50)  # class 2 never predicted in the reference
    assert histogram_test(reference, np.array([0] * 30 + [1] * 30), 3)[1] > 0.5
    assert histogram_test(reference, np.array([0] * 30 + [2] * 30), 3)[1] < 1e-6  # a class it never saw
    assert histogram_test(np.zeros(10, int), np.zeros(10, int), 3) == (0.0, 1.0)  # one class only: nothing to test


def test_the_false_alarm_rate_is_split_over_the_tests() -> None:
    rng = np.random.default_rng(1)
    tests = compare(
        dirichlet(rng, 300),
        dirichlet(rng, 120),
        classes=CLASSES,
        false_alarm_rate=0.02,
        permutations=200,
        reference_embeddings=rng.normal(size=(300, 8)),
        window_embeddings=rng.normal(size=(120, 8)),
    )
    assert [test.name for test in tests] == ["class_probability_ks"] * 3 + [
        "predicted_class_chi2",
        "embedding_mmd",
        "confidence_ks",
    ]
    assert sum(test.alpha for test in tests) == pytest.approx(0.02)
    assert [test.subject for test in tests[:3]] == list(CLASSES)
    without = compare(
        dirichlet(rng, 300), dirichlet(rng, 120), classes=CLASSES, false_alarm_rate=0.02, permutations=200
    )
    assert "embedding_mmd" not in {test.name for test in without}
    assert sum(test.alpha for test in without) == pytest.approx(0.02)


def test_a_drop_in_confidence_is_flagged_and_a_rise_is_not() -> None:
    rng = np.random.default_rng(2)
    reference = Reference(dirichlet(rng, 400), np.zeros(400, np.int64), None)
    config = DriftConfig(minimum=50)
    unsure = check_window("m", "1", records(dirichlet(rng, 200, (1.5, 1.0, 1.0))), reference, CLASSES, config)
    assert unsure.drift is True
    assert any(test.name == "confidence_ks" and test.drifted for test in unsure.tests)
    assert unsure.reason.endswith("probabilities alone (no embedding)")
    surer = check_window("m", "1", records(dirichlet(rng, 200, (12.0, 1.0, 1.0))), reference, CLASSES, config)
    assert not next(test for test in surer.tests if test.name == "confidence_ks").drifted


def test_too_few_records_or_no_reference_is_null_not_no_drift() -> None:
    rng = np.random.default_rng(3)
    reference = Reference(dirichlet(rng, 100), np.zeros(100, np.int64), None)
    config = DriftConfig(minimum=100)
    short = check_window("m", "1", records(dirichlet(rng, 99)), reference, CLASSES, config)
    assert short.drift is None
    assert short.window == 99
    assert short.tests == ()
    assert short.reason.startswith("not enough data: 99 predictions of m v1 logged, the check needs at least 100")
    missing = check_window("m", "1", records(dirichlet(rng, 150)), None, CLASSES, config)
    assert missing.drift is None
    assert missing.reason.startswith("no drift reference: m v1 was trained before")
    # Records of another class count (a corrupt line, another model's) are not counted in the window.
    odd = records(dirichlet(rng, 120, (1.0, 1.0, 1.0, 1.0)))
    assert check_window("m", "1", odd, reference, CLASSES, config).window == 0


def test_records_without_embeddings_fall_back_to_the_probabilities() -> None:
    rng = np.random.default_rng(4)
    reference = Reference(dirichlet(rng, 200), np.zeros(200, np.int64), rng.normal(size=(200, 6)).astype(np.float32))
    window = records(dirichlet(rng, 120), rng.normal(size=(120, 4)))  # another embedding size
    result = check_window("m", "1", window, reference, CLASSES, DriftConfig(minimum=100))
    assert result.drift is not None
    assert not result.uses_embedding


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04garbage", b"\x93NUMPY"])
def test_an_unreadable_reference_is_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "reference.npz"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=r"drift reference .* cannot be read"):
        Reference.load(path)


def test_a_reference_round_trips_and_checks_its_shapes(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    saved = Reference(dirichlet(rng, 10), np.arange(10), rng.normal(size=(10, 4)).astype(np.float32))
    loaded = Reference.load(saved.save(tmp_path / "reference.npz"))
    np.testing.assert_array_equal(loaded.probabilities, saved.probabilities)
    assert loaded.embeddings is not None
    np.savez(tmp_path / "bad.npz", probabilities=dirichlet(rng, 10), labels=np.arange(9))
    with pytest.raises(ModelError, match="mismatched shapes"):
        Reference.load(tmp_path / "bad.npz")


def test_the_randomized_pca_of_a_wide_embedding_finds_its_top_directions() -> None:
    from flows.drift import pca_projection

    rng = np.random.default_rng(6)
    signal = rng.normal(size=(400, 3)) * np.array([10.0, 6.0, 4.0])
    wide = signal @ np.linalg.qr(rng.normal(size=(512, 3)))[0].T + rng.normal(scale=0.1, size=(400, 512))
    _, directions = pca_projection(wide, components=10)  # 400 x 512: the randomized path
    _, exact = np.linalg.svd(wide - wide.mean(0), full_matrices=False)[1:]
    assert directions.shape == (512, 10)
    for index in range(3):  # the strong directions agree up to sign
        assert abs(float(directions[:, index] @ exact[index])) > 0.99
