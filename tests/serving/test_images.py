"""The inputs of the offline image builds: no docker needed for these checks."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from serving.checkout import COMPOSE_DIR, SOURCE_ROOT
from serving.image_builds import SERVING_FILES
from serving.wheelhouse import wheel_requirements

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
    wanted = wheel_requirements(COMPOSE_DIR / "requirements" / "prefect.txt")
    assert any(line.startswith("async-timeout") for line in wanted)  # needed by 3.11.2 only
    assert not any(line.startswith("pywin32") for line in wanted)  # Windows only


@pytest.mark.parametrize("relative", SERVING_FILES)
def test_serving_image_files_import_nothing_it_lacks(relative: str) -> None:
    source = (SOURCE_ROOT / relative).read_text()
    for package in ("torch", "mlflow", "prefect", "sklearn"):
        assert f"import {package}" not in source
        assert f"from {package}" not in source


def test_serving_image_files_hold_everything_the_service_imports() -> None:
    import ast

    wanted, seen = ["serving/service.py", "serving/health.py", "serving/model_server.py"], set()
    while wanted:
        relative = wanted.pop()
        seen.add(relative)
        for node in ast.walk(ast.parse((SOURCE_ROOT / relative).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("serving", "storage"):
                folder = node.module.replace(".", "/")
                # `from serving import fast_routes` names modules of the package; `from serving.x
                # import y`, names in module x.
                modules = (
                    [f"{folder}/{alias.name}.py" for alias in node.names] if (SOURCE_ROOT / folder).is_dir() else []
                )
                for module in [*modules, f"{folder}.py" if not modules else f"{folder}/__init__.py"]:
                    if module not in seen and module not in wanted:
                        wanted.append(module)
    assert seen <= set(SERVING_FILES)


@pytest.mark.docker
def test_an_image_is_rebuilt_only_when_its_inputs_change(tmp_path: Path) -> None:
    from serving.docker_client import docker_client
    from serving.image_builds import INPUTS_LABEL, build_image, resolve_base_image

    base = resolve_base_image("python:3.11-slim")
    tag = f"onebox/test-inputs:{tmp_path.name.lower()}"
    context = tmp_path / "context"
    (context / "wheels").mkdir(parents=True)
    (context / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY . /inputs\n")
    (context / "config.txt").write_text("one")
    (context / "wheels" / "a-1.0-py3-none-any.whl").write_bytes(b"wheel")
    built: list[str] = []
    try:
        built.append(build_image(context, tag, {"BASE_IMAGE": base}, skip_unchanged=True))
        assert build_image(context, tag, {"BASE_IMAGE": base}, skip_unchanged=True) == built[0]
        (context / "wheels" / "a-1.0-py3-none-any.whl").touch()  # a wheel counts by name and size
        assert build_image(context, tag, {"BASE_IMAGE": base}, skip_unchanged=True) == built[0]
        (context / "config.txt").write_text("two")
        built.append(build_image(context, tag, {"BASE_IMAGE": base}, skip_unchanged=True))
        assert built[1] != built[0]
        labels = [docker_client().images.get(image).labels[INPUTS_LABEL] for image in built]
        assert labels[0] != labels[1]
    finally:
        for image in reversed(built):
            docker_client().images.remove(image, force=True)
