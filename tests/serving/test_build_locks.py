"""Two image builds at once share the wheel cache and the build folders safely: no docker needed."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from serving import wheelhouse
from serving.image_builds import build_folder
from storage.errors import ServingError
from storage.settings import Settings


def test_two_builds_fill_the_wheel_cache_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    downloads: list[Path] = []

    def slow_pip_download(command: list[str]) -> None:  # pip itself: its PyPI is not the test's to need
        folder = Path(command[command.index("-d") + 1])
        downloads.append(folder)
        time.sleep(0.5)  # the window in which a second build renamed the folder from under the first
        (folder / "onnxruntime-1.0-cp311-none-any.whl").write_bytes(b"wheel")

    monkeypatch.setattr(wheelhouse, "run_checked", slow_pip_download)
    with ThreadPoolExecutor(2) as pool:
        targets = list(pool.map(lambda _: wheelhouse.ensure_wheelhouse("serving", tmp_path), range(2)))
    assert targets[0] == targets[1]
    assert len(downloads) == 1  # the second waited, then found the wheels complete
    assert (targets[0] / "onnxruntime-1.0-cp311-none-any.whl").read_bytes() == b"wheel"
    assert (targets[0] / ".complete").is_file()
    assert not list(tmp_path.glob("serving/*.partial"))


def test_a_failed_download_is_finished_by_the_next_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(command: list[str]) -> None:
        raise ServingError("pip download failed: connection reset")

    monkeypatch.setattr(wheelhouse, "run_checked", failing)
    with pytest.raises(ServingError, match="connection reset"):
        wheelhouse.ensure_wheelhouse("serving", tmp_path)
    monkeypatch.setattr(wheelhouse, "run_checked", lambda command: None)
    target = wheelhouse.ensure_wheelhouse("serving", tmp_path)
    assert (target / ".complete").is_file()


def test_two_builds_of_one_image_take_turns_with_its_folder(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    inside, overlapped, missing = threading.Lock(), [], []

    def build(number: int) -> None:
        with build_folder(settings, "model-digits") as context:
            if not inside.acquire(blocking=False):
                overlapped.append(number)
            (context / "Dockerfile").write_text(f"FROM build-{number}\n")
            time.sleep(0.3)  # docker reading the context meanwhile
            if (context / "Dockerfile").read_text() != f"FROM build-{number}\n":
                missing.append(number)
            inside.release()

    threads = [threading.Thread(target=build, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (overlapped, missing) == ([], [])
    assert (settings.home / "build" / "model-digits" / "Dockerfile").is_file()
