"""Two models in one real model server: each under /models/NAME/, the default unprefixed, the index at /."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import numpy as np
import pytest

from serving.local import LocalRuntime
from serving.metadata import DEFAULT_MODEL_VARIABLE, MODEL_DIR_VARIABLE
from serving.model_routes import ServedModels
from storage.errors import ModelError
from tests.conftest import png_bytes
from tests.serving.chromium import chromium_page
from tests.serving.conftest import COLORS, COLORS_SHAPE, DIGITS_SHAPE, colors_bundle, digits_bundle, lit_pixel

Served = tuple[LocalRuntime, dict[str, Path]]


def upload(image: np.ndarray) -> dict[str, tuple[str, bytes, str]]:
    return {"image": ("image.png", png_bytes(image), "image/png")}


def test_bundles_and_default_from_the_environment(tmp_path: Path) -> None:
    digits, colors = digits_bundle(tmp_path / "d"), colors_bundle(tmp_path / "c")
    both = {MODEL_DIR_VARIABLE: os.pathsep.join([str(digits), str(colors)])}
    assert ServedModels.from_environment(both).default == "digits"
    assert list(ServedModels.from_environment(both).bundles) == ["digits", "colors"]
    assert ServedModels.from_environment({**both, DEFAULT_MODEL_VARIABLE: "colors"}).default == "colors"
    # A container holds one model; the default named may live in another container.
    alone = ServedModels.from_environment({MODEL_DIR_VARIABLE: str(colors), DEFAULT_MODEL_VARIABLE: "digits"})
    assert alone.default == "colors"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", "is not set"), ("{missing}", "has no metadata.json"), ("{d}:{d2}", "both model 'digits'")],
)
def test_bad_bundle_lists_are_refused(tmp_path: Path, value: str, expected: str) -> None:
    folders = {
        "d": digits_bundle(tmp_path / "d"),
        "d2": digits_bundle(tmp_path / "d2", "2"),
        "missing": tmp_path / "no",
    }
    with pytest.raises(ModelError, match=expected):
        ServedModels.from_environment({MODEL_DIR_VARIABLE: value.replace(":", os.pathsep).format(**folders)})


@pytest.mark.slow
def test_each_model_answers_with_its_own_labels(two_models: Served) -> None:
    runtime, _ = two_models
    digits, colors = runtime.current("digits"), runtime.current("colors")
    assert digits is not None
    assert colors is not None
    assert digits.url.endswith("/models/digits")
    for index in range(3):
        color = httpx.post(f"{colors.url}/predict", files=upload(lit_pixel(COLORS_SHAPE, index))).json()
        assert color["label"] == COLORS[index]
        assert set(color["probabilities"]) == set(COLORS)
    for index in (0, 7, 9):
        digit = httpx.post(f"{digits.url}/predict", files=upload(lit_pixel(DIGITS_SHAPE, index))).json()
        assert digit["label"] == str(index)
    batch = httpx.post(f"{colors.url}/predict_batch", json={"images": np.zeros((2, *COLORS_SHAPE)).tolist()}).json()
    assert [item["label"] for item in batch] == ["red", "red"]
    assert httpx.get(f"{colors.url}/metadata").json()["image_shape"] == list(COLORS_SHAPE)


@pytest.mark.slow
def test_unprefixed_routes_answer_for_the_default_model(two_models: Served) -> None:
    runtime, _ = two_models
    url = runtime.settings.serve_url
    assert httpx.get(f"{url}/metadata").json()["model_name"] == "digits"
    answer = httpx.post(f"{url}/predict", files=upload(lit_pixel(DIGITS_SHAPE, 5))).json()
    assert answer["label"] == "5"
    spec = httpx.get(f"{url}/docs.json").json()
    assert "digits v1" in spec["info"]["description"]
    docs = httpx.get(f"{url}/docs")
    assert docs.status_code == 307
    assert docs.headers["location"] == "/models/digits/"


@pytest.mark.slow
def test_a_model_given_the_other_models_input_is_told_its_shape(two_models: Served) -> None:
    runtime, _ = two_models
    url = runtime.settings.serve_url
    answer = httpx.post(f"{url}/models/colors/predict_batch", json={"images": np.zeros((1, 8, 8)).tolist()})
    assert answer.status_code == 400
    assert "(N, 3, 16, 16)" in answer.json()["error"]
    # A gray upload to the colour model is converted, as its training data was.
    assert httpx.post(f"{url}/models/colors/predict", files=upload(lit_pixel(DIGITS_SHAPE, 0))).status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/models/nope/predict", "/models/nope/", "/models/nope", "/models//predict"])
def test_an_unknown_model_is_a_404_naming_the_served_ones(two_models: Served, path: str) -> None:
    runtime, _ = two_models
    answer = httpx.post(f"{runtime.settings.serve_url}{path}", files=upload(lit_pixel(DIGITS_SHAPE, 0)))
    assert answer.status_code == 404
    name = path.split("/")[2]
    assert answer.json() == {"error": f"unknown model {name!r}; served models: digits, colors"}


@pytest.mark.slow
def test_a_models_page_and_spec(two_models: Served) -> None:
    runtime, _ = two_models
    url = runtime.settings.serve_url
    redirect = httpx.get(f"{url}/models/colors?x=1")
    assert redirect.status_code == 308
    assert redirect.headers["location"] == "/models/colors/?x=1"
    page = httpx.get(f"{url}/models/colors/")
    assert page.status_code == 200
    assert "./docs.json" in httpx.get(f"{url}/models/colors/static_content/swagger-initializer.js").text
    spec = httpx.get(f"{url}/models/colors/docs.json").json()
    assert spec["servers"][0]["url"] == "/models/colors"
    assert "colors v1" in spec["info"]["description"]
    assert "red, green, blue" in spec["info"]["description"]
    assert "/predict" in spec["paths"]
    assert httpx.get(f"{url}/models/digits/docs.json").json()["servers"][0]["url"] == "/models/digits"


@pytest.mark.slow
def test_index_json_lists_both_models(two_models: Served) -> None:
    runtime, _ = two_models
    index = httpx.get(f"{runtime.settings.serve_url}/index.json").json()
    assert index["default"] == "digits"
    assert [(m["name"], m["version"], m["url"]) for m in index["models"]] == [
        ("digits", "1", "/models/digits/"),
        ("colors", "1", "/models/colors/"),
    ]
    assert index["models"][1]["test_accuracy"] == 0.75


SCREENSHOT = Path(__file__).parents[2] / "docs" / "index-page.png"


@pytest.mark.slow
def test_the_index_page_in_chromium_lists_both_models_with_working_links(two_models: Served) -> None:
    runtime, _ = two_models
    url = runtime.settings.serve_url
    with chromium_page() as page:
        page.open(f"{url}/")
        rows = page.evaluate(
            "[...document.querySelectorAll('tbody tr')].map(r => [...r.cells].map(c => c.innerText.trim()))"
        )
        assert [row[:4] for row in rows] == [
            ["digits default", "1", "digits-data:1", "90.00%"],
            ["colors", "1", "colors-data:1", "75.00%"],
        ]
        assert page.evaluate("document.scripts.length") == 0  # nothing to run, nothing from elsewhere
        page.screenshot(SCREENSHOT)
        page.evaluate("document.querySelector('a[href=\"/models/colors/\"]').click()")
        page.wait_until("location.pathname === '/models/colors/'", what="the link to the colors page")
        page.wait_until("document.querySelector('.info .description')", what="the Swagger page's spec")
        # BentoML's stylesheet hides the title; the description names the model to people.
        assert page.evaluate("document.querySelector('.info .title').textContent").split() == [
            "onebox",
            "model",
            "colors",
            "1",
            "OAS",
            "3.0",
        ]
        assert "colors v1" in page.evaluate("document.querySelector('.info .description').innerText")
    assert SCREENSHOT.stat().st_size > 10_000


@pytest.mark.slow
def test_try_it_out_on_a_models_swagger_page_posts_to_its_own_route(two_models: Served, tmp_path: Path) -> None:
    runtime, _ = two_models
    url = runtime.settings.serve_url
    image = tmp_path / "blue.png"
    image.write_bytes(png_bytes(lit_pixel(COLORS_SHAPE, 2)))
    with chromium_page() as page:
        page.open(f"{url}/models/colors/")
        description = page.wait_until("document.querySelector('.info .description')?.innerText", what="the spec")
        assert "colors v1" in description
        assert "red, green, blue" in description
        predict = "document.querySelector('.opblock-post[id$=\"-predict\"]')"  # not /predict_batch
        page.wait_until(predict, what="POST /predict on the page")
        page.evaluate(f"{predict}.querySelector('.opblock-summary-control').click()")
        page.wait_until("document.querySelector('.try-out__btn')", what="the Try it out button")
        page.evaluate("document.querySelector('.try-out__btn').click()")
        page.wait_until("document.querySelector('input[type=file]')", what="the file picker")
        page.set_file("input[type=file]", image)
        page.evaluate("document.querySelector('.execute').click()")
        status = page.wait_until(
            "document.querySelector('.live-responses-table .response .response-col_status')?.innerText",
            what="the answer",
        )
        body = page.evaluate("document.querySelector('.live-responses-table .microlight')?.innerText")
        requests = page.requests()
    assert [request for request in requests if request[0] == "POST"] == [("POST", f"{url}/models/colors/predict")]
    # Nothing leaves the box: BentoML's page called Google Tag Manager.
    assert {u for _, u in requests if not u.startswith("data:")} <= {u for _, u in requests if u.startswith(url)}
    assert status.strip() == "200"
    assert '"label": "blue"' in body or '"label":"blue"' in body


@pytest.mark.slow
def test_requests_to_both_models_at_once_get_their_own_answers(two_models: Served) -> None:
    from concurrent.futures import ThreadPoolExecutor

    runtime, _ = two_models
    url = runtime.settings.serve_url
    asks = [("colors", COLORS_SHAPE, i % 3, COLORS[i % 3]) for i in range(30)]
    asks += [("digits", DIGITS_SHAPE, i % 10, str(i % 10)) for i in range(30)]

    def ask(model: str, shape: tuple[int, int, int], pixel: int) -> str:
        answer = httpx.post(f"{url}/models/{model}/predict", files=upload(lit_pixel(shape, pixel)), timeout=30)
        return str(answer.json()["label"])

    with ThreadPoolExecutor(max_workers=12) as pool:
        labels = list(pool.map(lambda a: ask(*a[:3]), asks))
    assert labels == [expected for *_, expected in asks]


@pytest.mark.slow
def test_the_containers_smoke_check_asks_every_model_through_its_route(
    two_models: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from serving.health import main

    runtime, bundles = two_models
    url = runtime.settings.serve_url
    monkeypatch.setenv(MODEL_DIR_VARIABLE, os.pathsep.join(str(bundles[name]) for name in ("digits", "colors")))
    assert main([url]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"model digits v1 answers at {url}/models/digits",
        f"model colors v1 answers at {url}/models/colors",
    ]
    monkeypatch.setenv(MODEL_DIR_VARIABLE, str(colors_bundle(tmp_path / "colors-2", version="2")))
    assert main([url]) == 1  # version 2 is not what answers
    assert "came from model version '1', not '2'" in capsys.readouterr().err
