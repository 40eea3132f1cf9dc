"""The Docker Engine, as the images, the compose runtime and the benchmarks reach it."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from storage.errors import ServingError

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container
    from docker.models.images import Image
    from docker.models.networks import Network


@functools.cache
def docker_client() -> DockerClient:
    """One client per process (a failure to connect is not cached: the next call tries again).

    Raises:
        ServingError: no Docker Engine answers.
    """
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as error:  # the SDK raises several types for "no engine"
        raise ServingError(
            f"Docker Engine is not reachable ({error}); start it, or use ONEBOX_RUNTIME=local"
        ) from error
    return client


def find_image(tag: str) -> Image | None:
    """The image named ``tag``, or None."""
    import docker

    try:
        return docker_client().images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def image_exists(tag: str) -> bool:
    return find_image(tag) is not None


def _project_labels(project: str, *labels: str) -> dict[str, list[str]]:
    return {"label": [f"com.docker.compose.project={project}", *labels]}


def project_container(project: str, service: str) -> Container | None:
    """The container of compose ``service`` in ``project`` (stopped ones too), or None."""
    found = docker_client().containers.list(
        all=True, filters=_project_labels(project, f"com.docker.compose.service={service}")
    )
    return found[0] if found else None


def project_containers(project: str) -> list[Container]:
    """The running containers of compose ``project``."""
    return list(docker_client().containers.list(filters=_project_labels(project)))


def project_network(project: str) -> Network | None:
    """The default network of compose ``project``, or None."""
    found = docker_client().networks.list(filters=_project_labels(project, "com.docker.compose.network=default"))
    return found[0] if found else None
