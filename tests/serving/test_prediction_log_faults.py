"""The prediction log under faults, over HTTP: a full queue, an unwritable folder, a full disk,
a stop right after answering; none of them fails a request, and every drop is counted."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from serving.waiting import NotYet, wait_for
from storage.prediction_log import read_records
from tests.conftest import png_bytes
from tests.serving.conftest import COLORS_SHAPE, DIGITS_SHAPE, lit_pixel
from tests.serving.test_prediction_log import log_stats, records_of, serve, upload, url

pytestmark = pytest.mark.slow


def test_a_full_queue_and_an_unwritable_folder_fail_no_request_and_are_counted(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "predictions").mkdir(parents=True)
    (home / "predictions" / "digits").write_text("a file where the model's log folder should be")
    runtime = serve(tmp_path, prediction_log_queue=4)
    try:
        digits, colors = url(runtime, "digits"), url(runtime, "colors")
        for pixel in range(3):
            assert upload(digits, png_bytes(lit_pixel(DIGITS_SHAPE, pixel))).status_code == 200
        big = httpx.post(f"{digits}/predict_batch", json={"images": np.zeros((8, 1, 8, 8)).tolist()}, timeout=30)
        assert big.status_code == 200  # 8 records never fit a queue of 4: dropped, answered all the same
        assert len(big.json()) == 8
        assert upload(colors, png_bytes(lit_pixel(COLORS_SHAPE, 0)), request_id="other-model").status_code == 200

        def counted() -> dict[str, Any]:
            stats = log_stats(runtime, "digits")
            if stats["dropped_unwritable"] < 3:
                raise NotYet(str(stats))
            return stats

        stats = wait_for(counted, timeout_s=30, what="the drops to be counted")
        assert stats["dropped_queue_full"] == 8
        assert stats["dropped"] == stats["dropped_queue_full"] + stats["dropped_unwritable"]
        assert stats["written"] == 0
        assert "records not written" in stats["last_error"]
        records_of(runtime, "colors", "other-model", 1)  # the other model's log is untouched
        assert log_stats(runtime, "colors")["dropped"] == 0
        # The log of the server process now running (deploying colors restarted it).
        latest = runtime.logs(lines=1000).rpartition("Starting production HTTP BentoServer")[2]
        warnings = [line for line in latest.splitlines() if "prediction log" in line]
        assert any("queue full" in line for line in warnings)
        assert len([line for line in warnings if "records not written" in line]) == 1  # one line, not one per batch
    finally:
        runtime.stop()


def test_the_log_can_be_switched_off(tmp_path: Path) -> None:
    runtime = serve(tmp_path, prediction_log=False)
    try:
        assert upload(url(runtime, "digits"), png_bytes(lit_pixel(DIGITS_SHAPE, 2))).status_code == 200
        assert log_stats(runtime, "digits") == {"enabled": False, "reason": "ONEBOX_PREDICTION_LOG is off"}
        assert not runtime.settings.predictions_dir.exists()
    finally:
        runtime.stop()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 KB file system where the home's prediction log goes (root only: a real full disk)."""
    mount_point = tmp_path / "home" / "predictions"
    mount_point.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount_point)], check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_fails_no_request_and_is_counted(tmp_path: Path, tiny_disk: Path) -> None:
    runtime = serve(tmp_path)
    try:
        rng = np.random.default_rng(3)
        for index in range(80):  # about 800 bytes of image and 1 KB of record each: 48 KB fill up
            noise = png_bytes(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
            answer = upload(url(runtime, "colors"), noise, request_id=f"full-{index}")
            assert answer.status_code == 200, answer.text

        def full() -> dict[str, Any]:
            stats = log_stats(runtime, "colors")
            if not stats["queued"] and "No space left" in stats["last_error"]:
                return stats
            raise NotYet(str(stats))

        stats = wait_for(full, timeout_s=60, what="the full disk to be counted")
        assert stats["dropped_unwritable"] + stats["inputs_not_kept"] > 0
        assert stats["written"] + stats["dropped"] == 80 + 1  # every record accounted for (and the smoke one)
        assert upload(url(runtime, "digits"), png_bytes(lit_pixel(DIGITS_SHAPE, 1))).status_code == 200
    finally:
        runtime.stop()


def test_a_server_stopped_right_after_answering_writes_what_it_had_queued(tmp_path: Path) -> None:
    runtime = serve(tmp_path)
    try:
        for index in range(30):
            image = png_bytes(lit_pixel(DIGITS_SHAPE, index % 10))
            assert upload(url(runtime, "digits"), image, request_id=f"last-{index}").status_code == 200
    finally:
        runtime.stop()  # SIGTERM at once: the writer flushes its queue on the way out
    logged = {r.request_id for r in read_records(runtime.settings.predictions_dir, "digits")}
    assert {f"last-{index}" for index in range(30)} <= logged
