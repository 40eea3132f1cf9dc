"""The labeling app over HTTP, as the page uses it: progress, label, skip, undo, merge, and every
bad request (unknown model or class, path tricks, malformed or huge bodies) a one-line JSON 4xx."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from serving.labeling import PAGE_DIR
from storage.datasets import list_datasets
from tests.inbox_fixtures import LabelingHome, labeling_server, make_labeling_home


@dataclass(frozen=True)
class Served:
    home: LabelingHome
    url: str

    def page(self, path: str = "") -> str:
        return f"{self.url}/label/digits/{path}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, production_store: str) -> Iterator[Served]:
    home = make_labeling_home(tmp_path_factory.mktemp("labeling-http"), production_store)
    with labeling_server(home.settings) as url:
        yield Served(home, url)


def one_line_error(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    error = answer.json()["error"]
    assert isinstance(error, str)
    assert "\n" not in error
    assert "Traceback" not in error
    return error


def test_the_state_shows_the_first_image_with_the_models_guess(served: Served) -> None:
    state = httpx.get(served.page("state")).json()
    assert state["model"] == "digits"
    assert state["classes"] == [str(d) for d in range(10)]
    assert state["parent"] == f"digits:{served.home.parent.version}"
    assert state["total"] == 12
    first = next(image for image in served.home.inbox if image.sha256 == state["current"]["sha256"])
    assert state["current"]["guess"] == first.guess
    assert state["current"]["image"] == f"/label/digits/images/{first.sha256}.png"
    image = httpx.get(served.url + state["current"]["image"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")


def test_label_twice_skip_and_undo(served: Served) -> None:
    state = httpx.get(served.page("state")).json()
    sha = state["current"]["sha256"]
    labeled = state["labeled"]
    after = httpx.post(served.page("label"), json={"sha256": sha, "label": "4", "by": "ann"}).json()
    assert after["labeled"] == labeled + 1
    assert after["current"]["sha256"] != sha
    again = httpx.post(served.page("label"), json={"sha256": sha, "label": "5", "by": "ann"}).json()
    assert again["labeled"] == labeled + 1  # one label per image
    skipped = httpx.post(served.page("skip"), json={"sha256": again["current"]["sha256"], "by": "ann"}).json()
    assert skipped["skipped"] == state["skipped"] + 1
    undone = httpx.post(served.page("undo"), json={"by": "ann"}).json()
    assert undone["skipped"] == state["skipped"]
    assert undone["current"]["sha256"] == again["current"]["sha256"]


def test_an_unknown_class_is_refused(served: Served) -> None:
    sha = httpx.get(served.page("state")).json()["current"]["sha256"]
    error = one_line_error(httpx.post(served.page("label"), json={"sha256": sha, "label": "cat"}), 422)
    assert error.startswith("'cat' is not a class of model digits; its classes: 0, 1, 2")


@pytest.mark.parametrize("model", ["pets", "DIGITS", "..", "a" * 300, "digits;rm"])
def test_an_unknown_model_is_a_404_on_every_route(served: Served, model: str) -> None:
    for answer in (
        httpx.get(f"{served.url}/label/{model}/"),
        httpx.get(f"{served.url}/label/{model}/state"),
        httpx.post(f"{served.url}/label/{model}/merge", json={}),
        httpx.post(f"{served.url}/label/{model}/undo", json={}),
    ):
        assert 400 <= answer.status_code < 500, answer.text
        assert "error" in answer.json()


@pytest.mark.parametrize(
    "name",
    [
        "..%2F..%2Fcatalog.db",
        "%2e%2e%2fcatalog.db",
        "labels.db",
        "merge.lock",
        "%2Fetc%2Fpasswd",
        "A" * 64 + ".png",
        "0" * 64 + ".png",  # a digest, but not of an image in this inbox
        "0" * 64 + ".json",
        "0" * 64 + ".png%00.txt",
    ],
)
def test_only_the_inbox_images_are_served(served: Served, name: str) -> None:
    answer = httpx.get(f"{served.url}/label/digits/images/{name}")
    assert answer.status_code == 404, answer.text
    one_line_error(answer, 404)


def test_a_sidecar_or_the_label_store_is_never_served_by_digest(served: Served) -> None:
    sha = served.home.inbox[-1].sha256
    one_line_error(httpx.get(f"{served.url}/label/digits/images/{sha}.json"), 404)
    one_line_error(httpx.get(f"{served.url}/label/digits/images/{sha}.jpg"), 404)  # not its file


@pytest.mark.parametrize(
    "body",
    [
        {"sha256": "../../catalog", "label": "1"},
        {"sha256": "0" * 64, "label": "1"},
        {"label": "1"},
        {"sha256": ["x"], "label": "1"},
        {"sha256": "ab" * 32, "label": "1" * 100_000},
        {"sha256": "ab" * 32, "label": "1", "by": "x" * 10_000},
        [],
        "not an object",
    ],
)
def test_malformed_or_hostile_bodies_are_one_line_4xx(served: Served, body: object) -> None:
    answer = httpx.post(served.page("label"), json=body)
    assert 400 <= answer.status_code < 500, answer.text
    one_line_error(answer, answer.status_code)


def test_a_body_that_is_not_json_and_a_huge_one(served: Served) -> None:
    answer = httpx.post(
        served.page("label"), content=b"\xff\xfe not json", headers={"content-type": "application/json"}
    )
    assert one_line_error(answer, 400) == "There was an error parsing the body"
    huge = httpx.post(served.page("skip"), content=b'{"sha256": "' + b"a" * 5_000_000 + b'"}', timeout=60)
    one_line_error(huge, 422)


def test_undo_with_nothing_to_undo(served: Served) -> None:
    assert "nothing to undo" in one_line_error(httpx.post(served.page("undo"), json={"by": "nobody"}), 409)


def test_the_page_loads_nothing_from_elsewhere_and_runs_no_inline_script(served: Served) -> None:
    page = httpx.get(served.page())
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/label/static/labeling.js" defer>']
    script = httpx.get(f"{served.url}/label/static/labeling.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.text == (PAGE_DIR / "labeling.js").read_text()
    assert "http" not in script.text
    one_line_error(httpx.get(f"{served.url}/label/static/..%2Flabeling.py"), 404)


def test_the_index_lists_the_models_in_production(served: Served) -> None:
    assert httpx.get(f"{served.url}/label/").json() == {"models": [{"model": "digits", "url": "/label/digits/"}]}


def test_create_dataset_version_with_no_prefect_says_the_retrain_was_not_started(served: Served) -> None:
    state = httpx.get(served.page("state")).json()
    for _ in range(2):
        sha = httpx.get(served.page("state")).json()["current"]["sha256"]
        httpx.post(served.page("label"), json={"sha256": sha, "label": "7", "by": "ann"}).raise_for_status()
    made = httpx.post(served.page("merge"), json={"by": "ann"}, timeout=120)
    assert made.status_code == 200, made.text
    body = made.json()
    assert body["dataset"] == "digits"
    assert body["parent"] == served.home.parent.version
    assert body["merged"] == state["labeled"] + 2
    assert body["retrain"].startswith("the retrain was not started: no Prefect server answered at http://127.0.0.1:")
    (version,) = [v for v in list_datasets(served.home.settings) if v.version == body["version"]]
    assert (version.lineage or {})["by"] == "ann"
    after = httpx.get(served.page("state")).json()
    assert after["labeled"] == 0
    assert after["parent"] == f"digits:{body['version']}"
    nothing = httpx.post(served.page("merge"), json={"by": "ann"})
    assert one_line_error(nothing, 409).startswith("nothing is labeled in the inbox of model digits")


def test_a_change_from_another_site_is_refused(served: Served) -> None:
    # A page open in the same browser could otherwise label or merge through a form it posts here.
    before = httpx.get(served.page("state")).json()
    answer = httpx.post(served.page("undo"), json={"by": "x"}, headers={"Origin": "http://evil.example"})
    assert one_line_error(answer, 403).startswith("a change from a page of another site is refused")
    assert httpx.get(served.page("state")).json() == before
