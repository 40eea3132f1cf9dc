"""The labeling service's image: the serving runtime image plus sqlite-utils and the modules the
labeling page and the inbox merge import (compose/labeling/Dockerfile). Offline, like every build.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from serving.checkout import COMPOSE_DIR, SOURCE_ROOT
from serving.image_builds import _fresh_context, _link_tree, build_image
from serving.wheelhouse import ensure_wheelhouse
from storage.settings import Settings

# The modules the labeling page and the inbox merge import; the shared ones too, since the
# runtime image may hold older copies of them.
LABELING_FILES = (
    "flows/__init__.py",
    "flows/dataset_events.py",
    "flows/events.py",
    "flows/labeling_server.py",
    "serving/__init__.py",
    "serving/labeling.py",
    "serving/labeling_page/labeling.css",
    "serving/labeling_page/labeling.html",
    "serving/labeling_page/labeling.js",
    "storage/__init__.py",
    "storage/dataset_import.py",
    "storage/datasets.py",
    "storage/errors.py",
    "storage/image_store.py",
    "storage/images.py",
    "storage/inbox.py",
    "storage/inbox_merge.py",
    "storage/labels.py",
    "storage/locks.py",
    "storage/mlflow_peek.py",
    "storage/model_binding.py",
    "storage/names.py",
    "storage/registry.py",
    "storage/settings.py",
)
# storage/settings.py needs pydantic-settings, which the labeling-image group does not list yet:
# taken, at the versions the lock pins, from the prefect image's requirements and wheelhouse.
LABELING_BORROWED = {"prefect": ("pydantic-settings", "python-dotenv")}


def _pinned(group: str, names: tuple[str, ...]) -> list[str]:
    """The lines of compose/requirements/GROUP.txt that pin ``names``."""
    lines = (COMPOSE_DIR / "requirements" / f"{group}.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.split("==", 1)[0].strip() in names]


def build_labeling_image(settings: Settings, runtime: str) -> str:
    """The labeling service's image: the serving runtime plus sqlite-utils and the page's modules."""
    context = _fresh_context(settings, "labeling")
    shutil.copy2(COMPOSE_DIR / "labeling" / "Dockerfile", context / "Dockerfile")
    requirements = [(COMPOSE_DIR / "requirements" / "labeling.txt").read_text()]
    _link_tree(ensure_wheelhouse("labeling", settings.wheelhouse_dir), context / "wheels")
    for group, names in LABELING_BORROWED.items():
        pinned = _pinned(group, names)
        requirements.append("\n".join(pinned) + "\n")
        wheelhouse = ensure_wheelhouse(group, settings.wheelhouse_dir)
        for name in names:
            for wheel in wheelhouse.glob(f"{name.replace('-', '_')}-*.whl"):
                _link_tree_file(wheel, context / "wheels")
    (context / "requirements.txt").write_text("".join(requirements))
    for relative in LABELING_FILES:
        destination = context / "app" / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SOURCE_ROOT / relative, destination)
    tag = f"onebox/labeling:{settings.image_tag}"
    build_image(context, tag, {"RUNTIME_IMAGE": runtime}, skip_unchanged=True)
    return tag


def _link_tree_file(source: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, folder / source.name)
    except FileExistsError:
        pass
    except OSError:
        shutil.copy2(source, folder / source.name)
