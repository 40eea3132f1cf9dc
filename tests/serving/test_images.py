"""The inputs of the offline image builds: no docker needed for these checks."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from serving.images import COMPOSE_DIR, SERVING_FILES, SOURCE_ROOT, _wheel_requirements

REQUIREMENTS = sorted((COMPOSE_DIR / "requirements").glob("*.txt"))


def locked_versions() -> dict[str, str]:
    lock = tomllib.loads((SOURCE_ROOT / "uv.lock").read_text())
    return {package["name"]: package["version"] for package in lock["package"] if "version" in package}


@pytest.mark.parametrize("requirements", REQUIREMENTS, ids=lambda path: path.stem)
def test_image_requirements_pin_exactly_the_locked_versions(requirements: Path) -> None:
    locked = locked_versions()
    pins = [line.split(";")[0].strip() for line in requirements.read_text().splitlines() if "==" in line]
    assert pins
    for pin in pins:
        name, version = pin.split("==")
        assert locked.get(name.lower()) == version, f"{pin} differs from uv.lock; run: make requirements"


def test_only_the_worker_image_installs_torch() -> None:
    # Serving runs ONNX Runtime; the worker runs the flows, which train with torch.
    for requirements in REQUIREMENTS:
        assert ("torch==" in requirements.read_text()) == (requirements.stem == "worker"), requirements.name


def test_markers_are_resolved_for_every_python_311_the_images_run() -> None:
    wanted = _wheel_requirements(COMPOSE_DIR / "requirements" / "prefect.txt")
    assert any(line.startswith("async-timeout") for line in wanted)  # needed by 3.11.2 only
    assert not any(line.startswith("pywin32") for line in wanted)  # Windows only


@pytest.mark.parametrize("relative", SERVING_FILES)
def test_serving_image_files_import_nothing_it_lacks(relative: str) -> None:
    source = (SOURCE_ROOT / relative).read_text()
    for package in ("torch", "mlflow", "prefect", "sklearn"):
        assert f"import {package}" not in source
        assert f"from {package}" not in source
