import numpy as np
import pytest

from flows.perturbations import DRIFT_KINDS, perturb


@pytest.mark.parametrize("shape", [(5, 1, 8, 8), (3, 3, 32, 24)])
@pytest.mark.parametrize("kind", DRIFT_KINDS)
def test_each_kind_keeps_shape_and_type_and_changes_the_images(kind: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    images[:, :, : shape[2] // 2] = 255  # structure, so rotation and blur change something
    changed = perturb(images, kind, np.random.default_rng(1))  # type: ignore[arg-type]
    assert changed.shape == images.shape
    assert changed.dtype == np.uint8
    assert np.array_equal(changed, images) == (kind == "none")


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="unknown drift kind 'fog'"):
        perturb(np.zeros((1, 1, 4, 4), np.uint8), "fog", np.random.default_rng(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="uint8"):
        perturb(np.zeros((1, 4, 4), np.float32), "noise", np.random.default_rng(0))
