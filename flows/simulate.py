"""``onebox simulate``: production-like traffic for a served model, with or without drift.

The images are the held-out part of the dataset version the served model was trained on (its
validation and test splits: images it never took a training step on), changed by
:func:`flows.perturbations.perturb` and sent one at a time as PNG uploads to the model's
``/predict``, where the runtime serves it (the local process or the appliance's gateway). What
comes back is summed up: sent, answered, failed, and the labels the model gave.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from flows.perturbations import DriftKind, perturb
from storage.credentials import api_key_headers
from storage.errors import ModelError, ServingError
from storage.settings import Settings

if TYPE_CHECKING:
    from serving.runtime import ServerState

MAX_COUNT = 100_000
REQUEST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class HeldOut:
    """The images a served model did not train on, with their true labels."""

    dataset: str  # name:version
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)
    classes: tuple[str, ...]


@dataclass
class TrafficSummary:
    model: str
    version: str
    drift: str
    sent: int = 0
    failed: int = 0
    correct: int = 0  # answers that name the image's true class
    labels: Counter[str] = field(default_factory=Counter)
    first_failure: str | None = None

    @property
    def answered(self) -> int:
        return self.sent - self.failed

    @property
    def accuracy(self) -> float | None:
        """Of the answers, the share that named the image's true class (None with no answer)."""
        return self.correct / self.answered if self.answered else None

    def line(self) -> str:
        """One line: what was sent, what answered, and the labels given, most frequent first."""
        shares = ", ".join(f"{label} {count}" for label, count in self.labels.most_common())
        accuracy = f"{self.accuracy:.0%} right" if self.accuracy is not None else "none right"
        text = (
            f"sent {self.sent} images (drift: {self.drift}) to {self.model} v{self.version}: "
            f"{self.answered} answered ({accuracy}), {self.failed} failed; labels: {shares or 'none'}"
        )
        return text + (f" (first failure: {self.first_failure})" if self.first_failure else "")


def served_model(settings: Settings, model: str) -> ServerState:
    """Where ``model`` serves now.

    Raises:
        ModelError: no model of that name is registered.
        ServingError: it is registered but not served.
    """
    from serving.runtime import runtime_for
    from storage.registry import resolve_model

    name = resolve_model(settings, model)
    state = runtime_for(settings).current(name)
    if state is None:
        raise ServingError(f"model {name} is not served; start it with: onebox serve --model {name}")
    return state


def held_out_images(settings: Settings, model: str, version: str) -> HeldOut:
    """The validation and test images of the dataset version ``model`` version ``version`` trained on.

    Raises:
        ModelError: the version's run does not record its dataset (a run from before datasets were versioned).
        DatasetError: that dataset version is not in this home's catalog.
    """
    from flows.prepare import split_dataset
    from storage.datasets import open_images, resolve_dataset
    from storage.registry import get_version, mlflow_client

    run_id = get_version(settings, model, version).run_id
    params = mlflow_client(settings).get_run(run_id).data.params
    if "dataset_name" not in params or "dataset_version" not in params:
        raise ModelError(f"model {model} v{version}'s run {run_id} records no dataset version to take images from")
    dataset = resolve_dataset(params["dataset_name"], params["dataset_version"], settings)
    images = open_images(dataset)
    try:
        # The same split the run made: its seed picked train/validation, the test split is fixed.
        data = split_dataset(images, seed=int(params.get("seed", 0)))
        indexes = np.sort(np.concatenate([data.validation.indexes, data.test.indexes]))
        return HeldOut(
            dataset=f"{dataset.name}:{dataset.version}",
            images=images.read_many(indexes),
            labels=images.labels[indexes],
            classes=dataset.classes,
        )
    finally:
        images.close()


def png_upload(image: np.ndarray) -> bytes:
    """One uint8 (C, H, W) image as PNG bytes, as a user's upload would arrive."""
    from PIL import Image

    channels_last = np.moveaxis(image, 0, -1)
    picture = Image.fromarray(channels_last[..., 0] if channels_last.shape[-1] == 1 else channels_last)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def send_traffic(
    state: ServerState,
    held_out: HeldOut,
    *,
    drift: DriftKind,
    count: int,
    rng: np.random.Generator,
    progress: Callable[[int], None] | None = None,
    api_key: str | None = None,
) -> TrafficSummary:
    """POST ``count`` held-out images (drawn with replacement, changed by ``drift``) to the model's /predict.

    ``api_key``: what the gateway asks for once credentials are set. A failed request is counted
    and the traffic goes on: a model that dies mid-way shows up as
    failures in the summary, not as an exception.

    Raises:
        ValueError: ``count`` is outside 1 to MAX_COUNT.
    """
    import httpx

    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be 1 to {MAX_COUNT}, not {count}")
    summary = TrafficSummary(model=state.model_name, version=state.model_version, drift=drift)
    chosen = rng.integers(0, len(held_out.labels), size=count)
    with httpx.Client(timeout=REQUEST_TIMEOUT_S, headers=api_key_headers(api_key)) as client:
        for start in range(0, count, 64):  # perturbed in batches, sent one at a time
            picked = chosen[start : start + 64]
            batch = perturb(held_out.images[picked], drift, rng)
            for image, truth in zip(batch, held_out.labels[picked], strict=True):
                summary.sent += 1
                problem = None
                try:
                    answer = client.post(f"{state.url}/predict", files={"image": ("image.png", png_upload(image))})
                    if answer.status_code == 200:
                        label = str(answer.json()["label"])
                        summary.labels[label] += 1
                        summary.correct += label == held_out.classes[truth]
                    else:
                        problem = f"HTTP {answer.status_code}: {answer.text[:200]}"
                except (httpx.HTTPError, ValueError, KeyError) as error:
                    problem = f"{type(error).__name__}: {error}"
                if problem is not None:
                    summary.failed += 1
                    summary.first_failure = summary.first_failure or problem
            if progress is not None:
                progress(summary.sent)
    return summary
