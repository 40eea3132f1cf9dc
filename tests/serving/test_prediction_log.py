"""The prediction log of a real model server over HTTP: what is recorded, where, and what a full
queue, an unwritable folder, the caps and a SIGKILL do to it (never a failed request)."""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from benchmarks.servers import free_port
from serving.local import LocalRuntime
from serving.waiting import NotYet, wait_for
from storage.prediction_log import PredictionRecord, model_log_dir, read_records, record_files
from storage.settings import Settings
from tests.conftest import png_bytes
from tests.serving.conftest import COLORS_SHAPE, DIGITS_SHAPE, colors_bundle, digits_bundle, lit_pixel

pytestmark = pytest.mark.slow
EMBEDDING = 5


def serve(folder: Path, **settings: Any) -> LocalRuntime:
    """A local model server of ``digits`` (with an embedding) and ``colors`` (without one)."""
    runtime = LocalRuntime(Settings(home=folder / "home", serve_port=free_port(), serve_workers=1, **settings))
    runtime.deploy(digits_bundle(folder / "digits", embedding=EMBEDDING))
    runtime.deploy(colors_bundle(folder / "colors"))
    return runtime


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    runtime = serve(tmp_path_factory.mktemp("log"))
    try:
        yield runtime
    finally:
        runtime.stop()


def url(runtime: LocalRuntime, model: str) -> str:
    return f"{runtime.settings.serve_url}/models/{model}"


def log_stats(runtime: LocalRuntime, model: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{url(runtime, model)}/metadata").json()["prediction_log"]
    return stats


def records_of(runtime: LocalRuntime, model: str, request_id: str, count: int) -> list[PredictionRecord]:
    """The records of one request, once the writer has written all ``count`` of them."""

    def written() -> list[PredictionRecord]:
        found = [r for r in read_records(runtime.settings.predictions_dir, model) if r.request_id == request_id]
        if len(found) < count:
            raise NotYet(f"{len(found)} of {count} records of request {request_id}")
        return found

    return wait_for(written, timeout_s=30, what=f"the log of request {request_id}")


def upload(target: str, image: bytes, *, request_id: str | None = None, name: str = "i.png") -> httpx.Response:
    headers = {"X-Request-ID": request_id} if request_id is not None else {}
    return httpx.post(f"{target}/predict", files={"image": (name, image, "image/png")}, headers=headers, timeout=30)


def test_a_predict_is_recorded_with_its_upload_kept_as_sent(server: LocalRuntime) -> None:
    jpeg = png_bytes(np.kron(lit_pixel(DIGITS_SHAPE, 4), np.ones((4, 4), np.uint8)), format="JPEG")
    answer = upload(url(server, "digits"), jpeg, request_id="client-id-1", name="d.jpg")
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Request-ID"] == "client-id-1"

    (record,) = records_of(server, "digits", "client-id-1", 1)
    body = answer.json()
    assert (record.model, record.version, record.label) == ("digits", "1", body["label"])
    assert record.confidence == pytest.approx(body["confidence"], abs=1e-5)
    assert record.probabilities == pytest.approx(list(body["probabilities"].values()), abs=1e-5)
    assert record.sha256 == hashlib.sha256(jpeg).hexdigest()
    assert record.embedding is not None
    assert len(record.embedding) == EMBEDDING
    assert record.image == f"images/{record.sha256[:2]}/{record.sha256}.jpg"
    kept = model_log_dir(server.settings.predictions_dir, "digits") / record.image
    assert kept.read_bytes() == jpeg  # the upload's own bytes, not a re-encoding


def test_a_batch_is_one_record_per_image_each_kept_as_a_png(server: LocalRuntime) -> None:
    images = np.stack([lit_pixel(COLORS_SHAPE, k).transpose(2, 0, 1) for k in range(3)] * 2)  # 3 twice
    answer = httpx.post(f"{url(server, 'colors')}/predict_batch", json={"images": images.tolist()}, timeout=30)
    assert answer.status_code == 200, answer.text
    request_id = answer.headers["X-Request-ID"]  # made by the server: the client sent none
    assert len(request_id) == 32

    records = records_of(server, "colors", request_id, 6)
    assert [r.label for r in records] == [item["label"] for item in answer.json()] == ["red", "green", "blue"] * 2
    assert all(r.embedding is None for r in records)  # this model has no embedding output
    assert records[0].image == records[3].image  # one file per content
    for record, pixels in zip(records, images, strict=True):
        assert record.sha256 == hashlib.sha256(pixels.tobytes()).hexdigest()
        assert record.image is not None
        kept = Image.open(model_log_dir(server.settings.predictions_dir, "colors") / record.image)
        assert kept.format == "PNG"
        assert np.array_equal(np.asarray(kept).transpose(2, 0, 1), pixels)


def test_each_model_logs_into_its_own_folder_and_counts_what_it_wrote(server: LocalRuntime) -> None:
    before = {model: log_stats(server, model)["written"] for model in ("digits", "colors")}
    for pixel in range(4):
        assert upload(
            url(server, "digits"), png_bytes(lit_pixel(DIGITS_SHAPE, pixel)), request_id=f"d{pixel}"
        ).is_success
    assert upload(url(server, "colors"), png_bytes(lit_pixel(COLORS_SHAPE, 2)), request_id="c0").is_success
    records_of(server, "digits", "d3", 1)
    records_of(server, "colors", "c0", 1)

    predictions = server.settings.predictions_dir
    assert {r.model for r in read_records(predictions, "digits")} == {"digits"}
    assert {r.model for r in read_records(predictions, "colors")} == {"colors"}
    stats = log_stats(server, "digits")
    assert stats["written"] - before["digits"] == 4
    assert (stats["dropped"], stats["enabled"]) == (0, True)
    assert log_stats(server, "colors")["written"] - before["colors"] == 1


@pytest.mark.parametrize("sent", ["", "a" * 129, "two words", "line\tbreak", "ü"])
def test_a_request_id_that_is_not_sane_is_replaced(server: LocalRuntime, sent: str) -> None:
    image = png_bytes(lit_pixel(DIGITS_SHAPE, 1))
    answer = httpx.post(
        f"{url(server, 'digits')}/predict",
        files={"image": ("i.png", image, "image/png")},
        headers={b"X-Request-ID": sent.encode()},  # raw bytes, as a hostile client sends them
    )
    assert answer.status_code == 200
    assert answer.headers["X-Request-ID"] != sent
    assert len(answer.headers["X-Request-ID"]) == 32


DAY_TOO_OLD = "20000101"


def day_before(today: datetime, days: int) -> str:
    return (today - timedelta(days=days)).strftime("%Y%m%d")


def age(path: Path, days: float) -> None:
    then = time.time() - days * 86400
    os.utime(path, (then, then))


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    """A server with tiny caps, whose log folder already holds old records and images."""
    folder = tmp_path_factory.mktemp("capped")
    digits = folder / "home" / "predictions" / "digits"
    today = datetime.now(UTC)
    for day, size in ((DAY_TOO_OLD, 100), (day_before(today, 2), 5000), (day_before(today, 1), 5000)):
        (digits / "records" / day).mkdir(parents=True)
        (digits / "records" / day / "old-writer.jsonl").write_text("x" * size)
    old_image = digits / "images" / "ab" / f"{'ab' * 32}.png"
    old_image.parent.mkdir(parents=True)
    old_image.write_bytes(b"an old input")
    age(old_image, 40)
    runtime = serve(folder, prediction_log_days=30, prediction_log_max_mb=0.006, kept_inputs_max_mb=0.004)
    try:
        yield runtime
    finally:
        runtime.stop()


def test_retention_and_the_records_cap_apply_from_the_start(capped: LocalRuntime) -> None:
    digits = model_log_dir(capped.settings.predictions_dir, "digits")
    today = datetime.now(UTC)  # (a test run across midnight would fail here)

    def trimmed() -> None:
        if (digits / "records" / day_before(today, 2)).exists():
            raise NotYet("the records over the cap are still there")

    wait_for(trimmed, timeout_s=30, what="the writer's first pass over the limits")
    assert not (digits / "records" / DAY_TOO_OLD).exists()  # older than 30 days
    assert (digits / "records" / day_before(today, 1) / "old-writer.jsonl").is_file()  # back under the cap
    assert not list((digits / "images").rglob("abab*"))  # an input older than 30 days


def test_kept_inputs_stay_under_their_cap_oldest_first(capped: LocalRuntime) -> None:
    rng = np.random.default_rng(0)
    ids = []
    for index in range(30):  # noise PNGs of about 800 bytes: 24 KB in all, against a 4 KB cap
        noise = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        answer = upload(url(capped, "colors"), png_bytes(noise), request_id=f"noise-{index}")
        assert answer.status_code == 200
        ids.append(answer.headers["X-Request-ID"])
    last = records_of(capped, "colors", ids[-1], 1)[0]
    images = model_log_dir(capped.settings.predictions_dir, "colors") / "images"
    kept = [path for path in images.rglob("*.png")]
    assert sum(path.stat().st_size for path in kept) <= 0.004 * 1024 * 1024
    assert last.image is not None
    assert (images.parent / last.image).is_file()  # the newest stays
    assert 1 <= len(kept) < 30
    stats = log_stats(capped, "colors")
    assert stats["inputs_kept"] == 30 + 1  # and the deploy's smoke prediction
    assert stats["dropped"] == 0  # records are written even when their image is evicted later


def test_a_sigkilled_server_leaves_readable_records(capped: LocalRuntime) -> None:
    digits = url(capped, "digits")
    for index in range(20):
        assert upload(digits, png_bytes(lit_pixel(DIGITS_SHAPE, index % 10)), request_id=f"before-{index}").is_success
    records_of(capped, "digits", "before-19", 1)
    for index in range(20):  # some of these are still queued or being written when it dies
        upload(digits, png_bytes(lit_pixel(DIGITS_SHAPE, index % 10)), request_id=f"after-{index}")
    # Every process of the server, its workers (the writers) included: a worker outlives its
    # supervisor, each in a session of its own.
    processes = capped._tagged_processes()
    assert len(processes) >= 2
    for pid in processes:
        os.kill(pid, signal.SIGKILL)

    def gone() -> None:
        if capped.served():
            raise NotYet("still served")

    wait_for(gone, timeout_s=30, what="the killed server to be gone")
    records = read_records(capped.settings.predictions_dir, "digits")  # no error: at most half a line lost
    assert {f"before-{index}" for index in range(20)} <= {r.request_id for r in records}
    for path in record_files(capped.settings.predictions_dir, "digits"):
        if path.name != "old-writer.jsonl":  # the seeded file
            assert all(line.startswith("{") and line.endswith("}") for line in path.read_text().splitlines()[:-1])


def test_many_clients_at_once_lose_no_record_below_the_queue_bound(server: LocalRuntime) -> None:
    from concurrent.futures import ThreadPoolExecutor

    before = log_stats(server, "digits")
    image = png_bytes(lit_pixel(DIGITS_SHAPE, 6))
    with ThreadPoolExecutor(16) as clients:
        answers = list(
            clients.map(lambda index: upload(url(server, "digits"), image, request_id=f"many-{index}"), range(200))
        )
    assert [answer.status_code for answer in answers] == [200] * 200
    records_of(server, "digits", "many-199", 1)

    def all_written() -> dict[str, Any]:
        stats = log_stats(server, "digits")
        if stats["written"] - before["written"] < 200:
            raise NotYet(str(stats))
        return stats

    stats = wait_for(all_written, timeout_s=60, what="200 records written")
    assert stats["dropped"] == before["dropped"] == 0
    logged = {r.request_id for r in read_records(server.settings.predictions_dir, "digits")}
    assert {f"many-{index}" for index in range(200)} <= logged


def test_the_openapi_description_says_where_the_drops_are_shown(server: LocalRuntime) -> None:
    spec = httpx.get(f"{url(server, 'digits')}/docs.json").json()
    assert "prediction_log" in spec["info"]["description"]
    assert "X-Request-ID" in spec["info"]["description"]
