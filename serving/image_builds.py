"""Building the appliance's images offline: a base image, a host wheelhouse, thin model images.

No build step needs the network. The base image is used as it is when present, pulled when a
registry answers, and bootstrapped from Debian's packages (compose/base/bootstrap.sh) otherwise.
Python packages come from the host's wheelhouse (serving/wheelhouse.py). Docker's layer cache
makes a second build of unchanged inputs a no-op, and the appliance's images carry a digest of
their inputs, so an unchanged one is not even sent to the daemon again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from serving.checkout import COMPOSE_DIR, SOURCE_ROOT
from serving.docker_client import docker_client, find_image, image_exists
from serving.metadata import ModelMetadata
from serving.wheelhouse import ensure_wheelhouse, run_checked
from storage.errors import ServingError
from storage.locks import exclusive_lock
from storage.settings import Settings

BOOTSTRAP_IMAGE = "onebox/base:bookworm"
# The worker's base adds Debian's docker-compose: the flows it runs deploy models with it.
BOOTSTRAP_WORKER_IMAGE = "onebox/base-worker:bookworm"
WORKER_PACKAGES = "docker-compose"
# Where a bootstrap's lock lives: the engine's images are the host user's, whatever the onebox home.
BOOTSTRAP_LOCKS = Path.home() / ".cache" / "onebox" / "locks"
# The label that records a digest of what an image was built from (see build_image).
INPUTS_LABEL = "org.onebox.inputs"
# The files of the onebox package that serving imports; nothing that needs torch or MLflow.
SERVING_FILES = (
    "serving/__init__.py",
    "serving/errors.py",
    "serving/fast_routes.py",
    "serving/health.py",
    "serving/index_page.py",
    "serving/log_retention.py",
    "serving/log_settings.py",
    "serving/metadata.py",
    "serving/model_routes.py",
    "serving/model_server.py",
    "serving/openapi.py",
    "serving/prediction_log.py",
    "serving/predictor.py",
    "serving/request_limits.py",
    "serving/service.py",
    "serving/uploads.py",
    "serving/waiting.py",
    "storage/__init__.py",
    "storage/credentials.py",
    "storage/errors.py",
    "storage/images.py",
    "storage/limits.py",
    "storage/prediction_log.py",
)


@dataclass(frozen=True)
class ApplianceImages:
    runtime: str
    mlflow: str
    prefect: str
    gateway: str
    labeling: str


def resolve_base_image(requested: str, *, bootstrap: str = BOOTSTRAP_IMAGE, extra_packages: str = "") -> str:
    """``requested`` if present or pullable; else ``bootstrap``, built from Debian's packages."""
    import docker

    if image_exists(requested):
        return requested
    try:
        docker_client().images.pull(requested)
        return requested
    except docker.errors.APIError:
        pass  # no registry reachable: the normal case on an air-gapped server
    if image_exists(bootstrap):
        return bootstrap
    # One bootstrap per base image on this host at a time: Docker's images are the host's.
    with exclusive_lock(BOOTSTRAP_LOCKS / f"{bootstrap.replace('/', '_')}.lock", waiting=f"the {bootstrap} bootstrap"):
        if not image_exists(bootstrap):  # the one we waited for may have built it
            print(f"{requested} cannot be pulled; bootstrapping {bootstrap} from Debian's packages")
            run_checked([str(COMPOSE_DIR / "base" / "bootstrap.sh"), bootstrap, extra_packages])
    return bootstrap


@contextmanager
def build_folder(settings: Settings, name: str) -> Iterator[Path]:
    """An empty build context for image ``name``, held under its lock until the build is done.

    Two builds of one image at once (two `onebox up`, two deploys of one model) take turns: one
    emptying the folder while the other's build reads it failed with missing files.
    """
    context = settings.home / "build" / name
    with exclusive_lock(context.with_name(f"{name}.lock"), waiting=f"the {name} image's build folder"):
        if context.exists():
            shutil.rmtree(context)
        context.mkdir(parents=True)
        yield context


def _link_tree(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and not item.name.startswith("."):
            try:
                os.link(item, target / item.name)  # no copy when the cache shares the file system
            except OSError:
                shutil.copy2(item, target / item.name)


def _inputs_digest(context: Path, buildargs: dict[str, str], offline: bool) -> str:
    """A digest of everything a build reads: the context's files, the build args, the base image.

    Wheels are named by version and never change, so they count by name and size; other files
    by content. An image given as a build arg counts by its id, so a rebuilt base rebuilds.
    """
    digest = hashlib.sha256(repr((sorted(buildargs.items()), offline)).encode())
    for value in sorted(buildargs.values()):
        if (image := find_image(value)) is not None:
            digest.update(str(image.id).encode())
    for path in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(context)).encode() + b"\0")
        if path.suffix == ".whl":
            digest.update(str(path.stat().st_size).encode())
        else:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def build_image(
    context: Path, tag: str, buildargs: dict[str, str], *, offline: bool = True, skip_unchanged: bool = False
) -> str:
    """docker build; returns the image id. Raises ServingError with the build's last lines.

    ``offline`` builds with no network at all, which proves the build needs none.
    ``skip_unchanged``: label the image with a digest of its inputs, and build only when the image
    under ``tag`` has another one. Docker's layer cache would make such a build a no-op as well,
    but only after the whole context went to the daemon: gigabytes of wheels for the worker.
    (The label is one more build step, seconds on some storage drivers, so thin images that are
    built once per model version go without.)
    """
    import docker

    labels: dict[str, str] = {}
    if skip_unchanged:
        labels[INPUTS_LABEL] = _inputs_digest(context, buildargs, offline)
        existing = find_image(tag)
        if existing is not None and (existing.labels or {}).get(INPUTS_LABEL) == labels[INPUTS_LABEL]:
            return str(existing.id)
    try:
        image, _ = docker_client().images.build(
            path=str(context),
            tag=tag,
            buildargs=buildargs,
            labels=labels or None,
            rm=True,
            forcerm=True,
            network_mode="none" if offline else None,
        )
    except docker.errors.BuildError as error:
        lines = [str(chunk.get("stream", chunk.get("error", ""))).rstrip() for chunk in error.build_log]
        tail = "\n".join(line for line in lines if line)[-2000:]
        raise ServingError(f"building {tag} failed:\n{tail}") from error
    return str(image.id)


def _python_image(
    settings: Settings, name: str, group: str, base: str, extra: dict[str, Path], *, offline: bool = True
) -> str:
    wheels = ensure_wheelhouse(group, settings.wheelhouse_dir)
    tag = f"onebox/{name}:{settings.image_tag}"
    with build_folder(settings, name) as context:
        shutil.copy2(COMPOSE_DIR / name / "Dockerfile", context / "Dockerfile")
        shutil.copy2(COMPOSE_DIR / "requirements" / f"{group}.txt", context / "requirements.txt")
        _link_tree(wheels, context / "wheels")
        for relative, source in extra.items():
            destination = context / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
        build_image(context, tag, {"BASE_IMAGE": base}, offline=offline, skip_unchanged=True)
    return tag


def build_appliance_images(settings: Settings) -> ApplianceImages:
    """Build (or find cached) every image the appliance runs, except model images."""
    base = resolve_base_image(settings.base_image)
    serving_files = {f"app/{relative}": SOURCE_ROOT / relative for relative in SERVING_FILES}
    runtime = _python_image(settings, "runtime", "serving", base, serving_files)
    mlflow_files = {name: COMPOSE_DIR / "mlflow" / name for name in ("mlflow-server.sh", "mlflow-admin-password")}
    mlflow = _python_image(settings, "mlflow", "mlflow", base, mlflow_files)
    prefect_files = {"prefect-server.sh": COMPOSE_DIR / "prefect" / "prefect-server.sh"}
    prefect = _python_image(settings, "prefect", "prefect", base, prefect_files)
    gateway = f"onebox/gateway:{settings.image_tag}"
    with build_folder(settings, "gateway") as context:
        for name in ("Dockerfile", "nginx.conf.template", "no-models.conf", "gateway.sh"):
            shutil.copy2(COMPOSE_DIR / "gateway" / name, context / name)
        # The bootstrapped base has nginx; a stock python base fetches it from Debian while building.
        build_image(context, gateway, {"BASE_IMAGE": base}, offline=base == BOOTSTRAP_IMAGE, skip_unchanged=True)
    from serving.labeling_image import build_labeling_image  # it builds on this module's helpers

    labeling = build_labeling_image(settings, runtime)
    return ApplianceImages(runtime=runtime, mlflow=mlflow, prefect=prefect, gateway=gateway, labeling=labeling)


def build_worker_image(settings: Settings) -> str:
    """The worker container's image (compose profile `worker`): the flows' dependencies, torch included.

    Large (torch from PyPI is the CUDA build, about 7 GB installed) and built only when asked for.
    """
    base = resolve_base_image(settings.base_image, bootstrap=BOOTSTRAP_WORKER_IMAGE, extra_packages=WORKER_PACKAGES)
    # The bootstrapped base has docker-compose; a stock python base fetches it from Debian while building.
    return _python_image(settings, "worker", "worker", base, {}, offline=base == BOOTSTRAP_WORKER_IMAGE)


def model_image_tag(settings: Settings, model_name: str, version: str) -> str:
    """``onebox/model:PROJECT.NAME-vVERSION``: the compose project keeps appliances side by side apart."""
    return f"onebox/model:{settings.compose_project}.{model_name}-v{version}"


def model_of_image(settings: Settings, image: str) -> tuple[str, str]:
    """(model name, version) of a model image tag (a tag from before named models has no project)."""
    name, version = image.split(":", 1)[-1].rsplit("-v", 1)
    return name.removeprefix(f"{settings.compose_project}."), version


def remove_model_images(settings: Settings) -> int:
    """Delete every model image of this appliance (its compose project); returns how many went."""
    prefix = f"onebox/model:{settings.compose_project}."
    client = docker_client()
    doomed = [
        image for image in client.images.list(name="onebox/model") if any(t.startswith(prefix) for t in image.tags)
    ]
    for image in doomed:
        client.images.remove(image.id, force=True)
    return len(doomed)


def build_model_image(settings: Settings, bundle: Path, metadata: ModelMetadata) -> str:
    """A thin image: the serving runtime plus one model bundle. Seconds, no network."""
    runtime = f"onebox/runtime:{settings.image_tag}"
    if not image_exists(runtime):
        raise ServingError(f"the serving runtime image {runtime} is missing; run: make up")
    tag = model_image_tag(settings, metadata.model_name, metadata.model_version)
    with build_folder(settings, f"model-{metadata.model_name}") as context:  # models build side by side
        shutil.copy2(COMPOSE_DIR / "model" / "Dockerfile", context / "Dockerfile")
        shutil.copytree(bundle, context / "bundle")
        # No LABEL step: each build step is a container commit, seconds on fuse-overlayfs, and the
        # tag already names the model and version.
        build_image(context, tag, {"RUNTIME_IMAGE": runtime})
    return tag
