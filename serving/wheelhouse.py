"""The host's wheelhouse: the Python wheels the appliance's images install, fetched once.

Filled on the host from compose/requirements/*.txt (which `make requirements` exports from
uv.lock) and kept in a cache outside the checkout, so no image build needs the network.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from serving.checkout import COMPOSE_DIR
from storage.errors import ServingError
from storage.locks import exclusive_lock

# Every manylinux tag Debian bookworm's glibc 2.36 runs (pip accepts only the tags it is given).
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(5, 37)] + [
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
]
PIP_VARIABLE = "ONEBOX_PIP"  # the pip that downloads the wheels; the Makefile sets it


def run_checked(command: list[str]) -> None:
    """Run ``command``; raises ServingError with its output's tail when it fails."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ServingError(f"{' '.join(command[:3])} ... failed:\n{(done.stdout + done.stderr)[-2000:]}")


def _pip() -> list[str]:
    # The Makefile points this at the pip beside uv (a Python 3.11 venv in ~/.cache/onebox).
    configured = os.environ.get(PIP_VARIABLE)
    return [configured] if configured else [sys.executable, "-m", "pip"]


def wheel_requirements(requirements: Path) -> list[str]:
    """The pinned requirements some Linux x86-64 CPython 3.11 needs, markers resolved.

    pip evaluates markers for the interpreter running it, not for the image; the images run
    3.11.2 (Debian bookworm) or a newer 3.11 (python:3.11-slim), so a requirement goes into the
    wheelhouse when either needs it. A wheel a Python does not need is simply not installed.
    """
    from packaging.requirements import Requirement

    targets = [
        {"python_full_version": full, "python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux",
         "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
         "platform_python_implementation": "CPython"}
        for full in ("3.11.2", "3.11.99")
    ]  # fmt: skip
    wanted = []
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        if requirement.marker is None or any(requirement.marker.evaluate(env) for env in targets):
            wanted.append(f"{requirement.name}{requirement.specifier}")
    return wanted


def ensure_wheelhouse(group: str, cache: Path) -> Path:
    """Download the wheels of compose/requirements/GROUP.txt for Linux x86-64 CPython 3.11, once.

    Under a lock per group and requirements: a second build at the same time (another `onebox
    up`, a deploy that builds the runtime) waits and then finds the wheels there, instead of
    downloading into the same folder and renaming it from under the first.
    """
    requirements = COMPOSE_DIR / "requirements" / f"{group}.txt"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
    target = cache / group / digest
    if (target / ".complete").is_file():
        return target
    with exclusive_lock(cache / group / f"{digest}.lock", waiting=f"the wheel cache ({group})"):
        if (target / ".complete").is_file():  # the one we waited for filled it
            return target
        staging = target.with_name(digest + ".partial")  # a killed download's stays: pip skips what it has
        staging.mkdir(parents=True, exist_ok=True)
        wanted = staging / ".requirements.txt"
        wanted.write_text("\n".join(wheel_requirements(requirements)) + "\n")
        platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
        run_checked([
            *_pip(), "download", "--quiet", "--disable-pip-version-check", "--no-deps", "--only-binary=:all:",
            "--python-version", "3.11", "--implementation", "cp", *platforms,
            "-r", str(wanted), "-d", str(staging),
        ])  # fmt: skip
        (staging / ".complete").touch()
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target
