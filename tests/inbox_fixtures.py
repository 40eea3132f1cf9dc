"""A home with a model in production and images in its inbox: what the labeling tests start from.

Real parts only: the dataset is imported with onebox's import, the model is registered in a real
MLflow store (SQLite, shared by the tests of a session because creating one takes many seconds
here; the version it names is content-hashed, so every test's home has the same one), and the
inbox is filled with ``storage.inbox.add_to_inbox`` from real digits images.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.servers import free_port
from storage.datasets import DatasetVersion, import_image_folder
from storage.inbox import add_to_inbox
from storage.settings import Settings

MODEL = "digits"
PER_CLASS = 3  # images of each digit in the parent version
INBOX_SIZE = 12


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8), digits.target


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def import_parent(settings: Settings, folder: Path) -> DatasetVersion:
    """The first images of each digit, imported as dataset ``digits`` (the same version every time)."""
    images, labels = _digits()
    for digit in range(10):
        (folder / str(digit)).mkdir(parents=True, exist_ok=True)
        for index in np.flatnonzero(labels == digit)[:PER_CLASS]:
            (folder / str(digit) / f"{index:04d}.png").write_bytes(png(images[index]))
    return import_image_folder(folder, name="digits", settings=settings)


@dataclass(frozen=True)
class InboxImage:
    sha256: str
    truth: str  # the digit it shows
    guess: str  # what the "model" guessed


def fill_inbox(
    settings: Settings, folder: Path, count: int = INBOX_SIZE, *, start: int = 1000, model: str = MODEL
) -> list[InboxImage]:
    """``count`` digits images (none of the parent's) into ``model``'s inbox, oldest first."""
    images, labels = _digits()
    folder.mkdir(parents=True, exist_ok=True)
    added = []
    for index in range(start, start + count):
        data = png(images[index])
        sha = hashlib.sha256(data).hexdigest()
        path = folder / f"{sha}.png"
        path.write_bytes(data)
        truth = str(labels[index])
        guess = str((labels[index] + index % 2) % 10)  # wrong for every other image
        add_to_inbox(settings.inbox_dir, model, image=path, sha256=sha, guess=guess, confidence=0.41,
                     model_version="1", reason="low-confidence")  # fmt: skip
        added.append(InboxImage(sha, truth, guess))
    return added


@pytest.fixture(scope="session")
def production_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow store in which model ``digits`` has production version 1, trained on the parent."""
    from storage.model_binding import binding_tags
    from storage.registry import PRODUCTION, mlflow_client

    root = tmp_path_factory.mktemp("labeling-registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    scratch = Settings(home=root / "home", tracking_uri=uri)
    parent = import_parent(scratch, root / "parent")
    client = mlflow_client(scratch)
    client.create_registered_model(MODEL)
    tags = {"dataset": f"{parent.name}:{parent.version}", **binding_tags(parent.classes, parent.image_shape)}
    version = client.create_model_version(MODEL, source=(root / "model").as_uri(), tags=tags)
    client.set_registered_model_alias(MODEL, PRODUCTION, version.version)
    return uri


@dataclass(frozen=True)
class LabelingHome:
    settings: Settings
    parent: DatasetVersion
    inbox: list[InboxImage]


def make_labeling_home(folder: Path, production_store: str) -> LabelingHome:
    settings = Settings(home=folder / "home", tracking_uri=production_store, label_port=free_port())
    parent = import_parent(settings, folder / "parent")
    return LabelingHome(settings, parent, fill_inbox(settings, folder / "seen"))


@pytest.fixture
def labeling_home(tmp_path: Path, production_store: str) -> LabelingHome:
    """A fresh home: the parent dataset, model ``digits`` in production on it, 12 images in its inbox."""
    return make_labeling_home(tmp_path, production_store)


@contextlib.contextmanager
def labeling_server(
    settings: Settings, *, prefect_api_url: str | None = None, variables: dict[str, str] | None = None
) -> Iterator[str]:
    """``python -m flows.labeling_server`` on the home of ``settings``, as the appliance runs it,
    with ``variables`` in its environment; yields its URL once ``/label/healthz`` answers."""
    import httpx

    from serving.waiting import NotYet, wait_for

    environment = {
        **os.environ,
        "ONEBOX_HOME": str(settings.home),
        "ONEBOX_TRACKING_URI": str(settings.tracking_uri),
        "ONEBOX_LABEL_PORT": str(settings.label_port),
        "ONEBOX_BIND": "127.0.0.1",
        "ONEBOX_RUNTIME": "local",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        # No Prefect server unless the test gives one: a port nothing listens on.
        "PREFECT_API_URL": prefect_api_url or f"http://127.0.0.1:{free_port()}/api",
        **(variables or {}),
    }
    server = subprocess.Popen([sys.executable, "-m", "flows.labeling_server"], env=environment)
    url = f"http://127.0.0.1:{settings.label_port}"

    def healthy() -> None:
        if server.poll() is not None:
            raise RuntimeError(f"the labeling server exited with {server.returncode}")
        try:
            httpx.get(f"{url}/label/healthz", timeout=2).raise_for_status()
        except httpx.HTTPError as error:
            raise NotYet(str(error)) from None

    try:
        wait_for(healthy, timeout_s=120, what="the labeling server to answer")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
