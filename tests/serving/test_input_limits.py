"""Hostile and huge requests against a real model server over HTTP: each is a 4xx JSON answer,
costs the server little, is logged as one line, and leaves the server answering."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from benchmarks.servers import free_port
from serving.local import LocalRuntime
from storage.settings import Settings
from tests.conftest import png_bytes
from tests.serving.conftest import digits_bundle, lit_pixel
from tests.storage.test_images import bomb_png

pytestmark = pytest.mark.slow


def huge_png(side: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    folder = tmp_path_factory.mktemp("limits")
    runtime = LocalRuntime(Settings(home=folder / "home", serve_port=free_port(), serve_workers=1))
    try:
        runtime.deploy(digits_bundle(folder / "digits"))
        yield runtime
    finally:
        runtime.stop()


def url(server: LocalRuntime) -> str:
    return server.settings.serve_url


def server_rss_bytes(server: LocalRuntime) -> int:
    """Resident memory of every process of the model server (the worker included)."""
    total = 0
    for pid in server._tagged_processes():
        status = Path(f"/proc/{pid}/status").read_text()
        total += next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
    return total


def still_answers(server: LocalRuntime) -> None:
    image = png_bytes(lit_pixel((1, 8, 8), 3))
    answer = httpx.post(f"{url(server)}/predict", files={"image": ("d.png", image, "image/png")})
    assert answer.status_code == 200
    assert answer.json()["label"] == "3"


@pytest.mark.parametrize(("name", "data"), [("bomb", bomb_png()), ("huge", huge_png(13000))])
def test_images_with_too_many_pixels_are_a_413_before_decoding(server: LocalRuntime, name: str, data: bytes) -> None:
    started = time.perf_counter()
    answer = httpx.post(f"{url(server)}/predict", files={"image": (f"{name}.png", data, "image/png")}, timeout=30)
    assert answer.status_code == 413
    assert "too many pixels" in answer.json()["error"]
    assert time.perf_counter() - started < 3  # decoding 13000x13000 took 5 s and 1.45 GB a worker
    still_answers(server)


def test_four_huge_images_at_once_cost_the_server_little(server: LocalRuntime) -> None:
    """Four valid 13000x13000 PNGs at once took a container to 2.5 GB and stalled other clients."""
    before = server_rss_bytes(server)
    data = huge_png(13000)

    async def four() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url(server), timeout=30) as client:
            files = {"image": ("huge.png", data, "image/png")}
            return await asyncio.gather(*(client.post("/predict", files=files) for _ in range(4)))

    answers = asyncio.run(four())
    assert [answer.status_code for answer in answers] == [413] * 4
    assert server_rss_bytes(server) - before < 50_000_000
    still_answers(server)


def test_a_123_mb_batch_is_refused_unparsed(server: LocalRuntime) -> None:
    before = server_rss_bytes(server)
    body = b'{"images": [' + b"[[" + b"0, " * 40_000_000 + b"0]]]}"  # 123 MB of pixel values
    answer = httpx.post(
        f"{url(server)}/predict_batch", content=body, headers={"content-type": "application/json"}, timeout=60
    )
    assert answer.status_code == 413
    assert "too large" in answer.json()["error"]
    assert "fewer images" in answer.json()["error"]
    assert server_rss_bytes(server) - before < 50_000_000  # parsed, it took a worker to 2.3 GB
    still_answers(server)


def test_a_chunked_body_is_read_only_up_to_the_limit(server: LocalRuntime) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(200):  # 200 MB, if the server read it all
            sent += 1
            yield b"\0" * 1_000_000

    answer = httpx.post(
        f"{url(server)}/predict",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=x"},
        timeout=60,
    )
    assert answer.status_code == 413
    assert "at most 26,214,400 bytes" in answer.json()["error"]
    still_answers(server)


def test_a_too_large_batch_is_refused_for_the_models_shape(server: LocalRuntime) -> None:
    batch = np.zeros((1025, 1, 8, 8), np.uint8).tolist()
    answer = httpx.post(f"{url(server)}/models/digits/predict_batch", json={"images": batch}, timeout=30)
    assert answer.status_code in (400, 413)
    assert "1024" in answer.json()["error"] or "too large" in answer.json()["error"]
    fits = httpx.post(f"{url(server)}/predict_batch", json={"images": np.zeros((1024, 8, 8)).tolist()}, timeout=30)
    assert fits.status_code == 200
    assert len(fits.json()) == 1024


@pytest.mark.parametrize("route", ["/predict", "/predict_batch", "/models/digits/predict_batch"])
def test_multipart_without_a_boundary_is_a_400(server: LocalRuntime, route: str) -> None:
    answer = httpx.post(f"{url(server)}{route}", content=b"--x\r\n", headers={"content-type": "multipart/form-data"})
    assert answer.status_code == 400
    assert answer.json() == {"error": "the multipart body has no boundary in its Content-Type header"}


def test_two_hundred_thousand_parts_are_refused_quickly(server: LocalRuntime) -> None:
    part = b'--x\r\nContent-Disposition: form-data; name="f"\r\n\r\nv\r\n'
    started = time.perf_counter()
    answer = httpx.post(
        f"{url(server)}/predict",
        content=part * 200_000 + b"--x--\r\n",
        headers={"content-type": "multipart/form-data; boundary=x"},
        timeout=30,
    )
    assert answer.status_code == 400
    assert "200,000 parts" in answer.json()["error"]
    assert time.perf_counter() - started < 3


def test_every_4xx_is_one_log_line_without_a_traceback(server: LocalRuntime) -> None:
    offset = server.log_path.stat().st_size
    marker = f"not-an-image-{time.time_ns()}"
    httpx.post(f"{url(server)}/predict", files={"image": ("x.png", marker.encode(), "image/png")})
    httpx.post(f"{url(server)}/predict_batch", json={"images": "abc"})
    httpx.post(f"{url(server)}/predict_batch", json={"pictures": []})  # pydantic's validation error
    httpx.post(f"{url(server)}/predict", files={"image": ("b.png", bomb_png(), "image/png")})
    httpx.get(f"{url(server)}/models/nope/metadata")
    still_answers(server)  # the log is written before the next answer on this one worker

    def written() -> str:
        return server.log_path.read_bytes()[offset:].decode(errors="replace")

    from serving.waiting import NotYet, wait_for

    def five_lines() -> None:
        if written().count(" -> 4") < 5:
            raise NotYet("the 4xx lines are not written yet")

    wait_for(five_lines, timeout_s=10, what="five 4xx log lines")
    lines = [line for line in written().splitlines() if " -> 4" in line]
    assert [line.split(" -> ")[1][:3] for line in lines] == ["400", "400", "400", "413", "404"]
    assert "Traceback" not in written()
    assert all(line.count("\n") == 0 and len(line) < 700 for line in lines)


def test_a_large_image_is_decoded_off_the_event_loop(server: LocalRuntime) -> None:
    """While a 7000x7000 upload decodes, small predictions on the same single worker go on: none
    waits for the large one's decode (inline, one would wait about as long as it takes)."""
    gradient = np.tile(np.arange(7000, dtype=np.uint32) % 256, (7000, 1)).astype(np.uint8)
    large = png_bytes(gradient)
    small = png_bytes(lit_pixel((1, 8, 8), 5))

    async def race() -> tuple[float, list[float]]:
        async with httpx.AsyncClient(base_url=url(server), timeout=60) as client:
            started = time.perf_counter()
            large_answer = asyncio.ensure_future(
                client.post("/predict", files={"image": ("l.png", large, "image/png")})
            )
            latencies: list[float] = []
            while not large_answer.done() or not latencies:
                sent = time.perf_counter()
                answer = await client.post("/predict", files={"image": ("s.png", small, "image/png")})
                assert answer.json()["label"] == "5"
                latencies.append(time.perf_counter() - sent)
            assert (await large_answer).status_code == 200
            return time.perf_counter() - started, latencies

    large_took, small_latencies = asyncio.run(race())
    assert len(small_latencies) >= 3
    assert max(small_latencies) < large_took / 2
