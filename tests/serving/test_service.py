"""The served model over real HTTP: predictions, metadata, Swagger UI and error answers."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from flows.prepare import split_dataset
from storage.datasets import BUILTIN_DATASET, open_images, resolve_dataset
from tests.conftest import TrainedPipeline, png_bytes
from tests.storage.test_images import bomb_png

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def url(trained: TrainedPipeline) -> str:
    return trained.settings.serve_url


@pytest.fixture(scope="module")
def test_split(trained: TrainedPipeline):
    settings = trained.settings
    return split_dataset(open_images(resolve_dataset(BUILTIN_DATASET, None, settings)), seed=0).test


def test_predict_real_pngs(url: str, test_split) -> None:
    correct = 0
    for image, label in zip(test_split.images[:40], test_split.labels[:40], strict=True):
        answer = httpx.post(f"{url}/predict", files={"image": ("digit.png", png_bytes(image[0]), "image/png")})
        assert answer.status_code == 200
        body = answer.json()
        assert set(body) == {"label", "confidence", "probabilities", "model_version"}
        assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert body["confidence"] == max(body["probabilities"].values())
        correct += body["label"] == str(label)
    assert correct >= 36


def test_served_model_scores_at_least_095_on_the_test_split(url: str, test_split) -> None:
    answer = httpx.post(f"{url}/predict_batch", json={"images": test_split.images.tolist()}, timeout=30)
    assert answer.status_code == 200
    predicted = [int(item["label"]) for item in answer.json()]
    assert np.mean(np.array(predicted) == test_split.labels) >= 0.95


def test_larger_color_jpeg_is_converted_like_training_data(url: str, test_split) -> None:
    from PIL import Image

    digit = test_split.images[0][0]
    big = np.asarray(Image.fromarray(digit).resize((64, 64), Image.Resampling.NEAREST).convert("RGB"))
    small = httpx.post(f"{url}/predict", files={"image": ("d.png", png_bytes(digit), "image/png")}).json()
    large = httpx.post(f"{url}/predict", files={"image": ("d.jpg", png_bytes(big, format="JPEG"), "image/jpeg")}).json()
    assert large["label"] == small["label"]


def test_a_sixteen_bit_png_is_scaled_as_at_import(url: str, test_split) -> None:
    digit = test_split.images[0][0].astype(np.uint16) * 257  # the same digit, 16 bits a pixel
    wide = httpx.post(f"{url}/predict", files={"image": ("d16.png", png_bytes(digit), "image/png")})
    narrow = httpx.post(f"{url}/predict", files={"image": ("d.png", png_bytes(test_split.images[0][0]), "image/png")})
    assert wide.status_code == 200
    assert wide.json()["probabilities"] == narrow.json()["probabilities"]


def test_metadata_names_the_model(url: str, trained: TrainedPipeline) -> None:
    body = httpx.get(f"{url}/metadata").json()
    assert body["model_name"] == trained.result.model_name
    assert body["dataset_name"] == "digits"
    assert body["classes"] == [str(d) for d in range(10)]
    assert body["image_shape"] == [1, 8, 8]
    assert body["preprocessing"]["resize"] == "stretch"  # as the digits were imported
    assert body["metrics"]["test_accuracy"] >= 0.9


def test_swagger_ui_and_docs(url: str, trained: TrainedPipeline) -> None:
    page = httpx.get(f"{url}/")
    assert page.status_code == 200
    assert "<html" in page.text.lower()
    redirect = httpx.get(f"{url}/docs")
    assert redirect.status_code in (307, 308)
    assert redirect.headers["location"].endswith("/")
    spec = httpx.get(f"{url}/docs.json").json()
    assert "/predict" in spec["paths"]
    assert "/predict_batch" in spec["paths"]
    served = httpx.get(f"{url}/metadata").json()["model_version"]
    assert f"{trained.result.model_name} v{served}" in spec["info"]["description"]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"image": ("notes.txt", b"hello", "image/png")}, "not a PNG or JPEG"),
        ({"image": ("empty.png", b"", "image/png")}, "empty"),
        ({"image": ("cut.png", png_bytes(np.full((64, 64), 7, np.uint8))[:60], "image/png")}, "not a readable image"),
        ({"image": ("notes.txt", b"hello", "text/plain")}, "content type"),
        ({"other": ("x.png", b"x", "image/png")}, "image"),
        ({"image": ("bomb.png", bomb_png(), "image/png")}, "too many pixels"),  # Pillow's own error, not a 500
    ],
)
def test_bad_uploads_get_a_4xx_json_error(url: str, files: dict, expected: str) -> None:
    answer = httpx.post(f"{url}/predict", files=files)
    assert 400 <= answer.status_code < 500
    body = answer.json()
    assert isinstance(body, dict)
    assert expected in str(body["error"]) + str(body.get("detail", ""))


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"images": [[1, 2]]}, "shape"),
        ({"images": np.full((1, 8, 8), 300).tolist()}, "0-255"),
        ({"images": np.zeros((1, 3, 8, 8)).tolist()}, "(N, 1, 8, 8)"),
    ],
)
def test_bad_batches_get_a_4xx_json_error(url: str, payload: dict, expected: str) -> None:
    answer = httpx.post(f"{url}/predict_batch", json=payload)
    assert answer.status_code == 400
    assert expected in answer.json()["error"]
