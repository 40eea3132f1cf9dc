"""The labeling service's image: the serving runtime image plus sqlite-utils and the modules the
labeling page and the inbox merge import (compose/labeling/Dockerfile), and the supervisor's
(serving/supervisor.py, with the Docker SDK). Offline, like every build.
"""

from __future__ import annotations

import shutil

from serving.checkout import COMPOSE_DIR, SOURCE_ROOT
from serving.image_builds import _link_tree, build_folder, build_image
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
    # The appliance's supervisor runs from this image too (docker-compose.yml).
    "serving/appliance_network.py",
    "serving/appliance_state.py",
    "serving/docker_client.py",
    "serving/supervisor.py",
    "serving/labeling.py",
    "serving/labeling_page/labeling.css",
    "serving/labeling_page/labeling.html",
    "serving/labeling_page/labeling.js",
    "storage/__init__.py",
    "storage/credentials.py",
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


def build_labeling_image(settings: Settings, runtime: str) -> str:
    """The labeling service's image: the serving runtime plus sqlite-utils and the page's modules."""
    wheels = ensure_wheelhouse("labeling", settings.wheelhouse_dir)
    tag = f"onebox/labeling:{settings.image_tag}"
    with build_folder(settings, "labeling") as context:
        shutil.copy2(COMPOSE_DIR / "labeling" / "Dockerfile", context / "Dockerfile")
        _link_tree(wheels, context / "wheels")
        shutil.copy2(COMPOSE_DIR / "requirements" / "labeling.txt", context / "requirements.txt")
        for relative in LABELING_FILES:
            destination = context / "app" / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(SOURCE_ROOT / relative, destination)
        build_image(context, tag, {"RUNTIME_IMAGE": runtime}, skip_unchanged=True)
    return tag
