"""Running docker compose on the appliance's project: which compose, with what environment.

Compose interpolates docker-compose.yml from one environment, built by
:func:`compose_environment` from the settings object (every setting, under its own name) and the
appliance's state. The worker container gets the same settings through an env file written
beside state.env, so a flow it runs sees what the host's `onebox` sees.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

from serving.appliance_state import ApplianceState, read_state, state_path, write_env_file, write_state
from serving.checkout import COMPOSE_FILE, SOURCE_ROOT
from serving.compose_models import prepare_log_folders, write_models_compose
from storage.errors import ServingError
from storage.settings import Settings

# docker-compose.yml's variables that are neither settings nor state.
SOURCE_VARIABLE = "ONEBOX_SOURCE"  # the checkout, mounted into the worker at the path it has here
SETTINGS_FILE_VARIABLE = "ONEBOX_SETTINGS_FILE"  # the worker's env_file: every setting
SETTINGS_FILE = "settings.env"
# The labeling service runs as the owner of the onebox home: it writes there beside the host's commands.
HOME_UID_VARIABLE, HOME_GID_VARIABLE = "ONEBOX_HOME_UID", "ONEBOX_HOME_GID"
# The Docker socket's group, which the supervisor service joins to start containers (docker-compose.yml).
DOCKER_GID_VARIABLE = "ONEBOX_DOCKER_GID"
DOCKER_SOCKET = Path("/var/run/docker.sock")
PREFIX = "ONEBOX_"


@functools.cache
def compose_command() -> tuple[str, ...]:
    """The `docker compose` plugin when present, else the standalone `docker-compose` (probed once)."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ("docker", "compose")
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    raise ServingError("neither `docker compose` nor `docker-compose` is installed")


def compose_environment(settings: Settings, state: ApplianceState) -> dict[str, str]:
    """The ONEBOX_ variables docker compose sees; writes the worker's settings file on the way.

    Every setting under its environment variable, then the state (the recorded network wins over
    a subnet setting: it is what the network was made with), then the checkout and the settings
    file. ONEBOX_ variables of this process's own environment are left out: the settings object
    has already read them, and one that is not a setting must not leak into the stack.
    """
    settings_file = settings.compose_dir / SETTINGS_FILE
    write_env_file(settings_file, settings.environment(), private=True)  # the credentials are in it
    settings.home.mkdir(parents=True, exist_ok=True)
    home = settings.home.stat()
    return {
        **settings.environment(),
        **{key: value for key, value in state.variables().items() if value},
        SOURCE_VARIABLE: str(SOURCE_ROOT),
        SETTINGS_FILE_VARIABLE: str(settings_file),
        HOME_UID_VARIABLE: str(home.st_uid),
        HOME_GID_VARIABLE: str(home.st_gid),
        DOCKER_GID_VARIABLE: str(DOCKER_SOCKET.stat().st_gid if DOCKER_SOCKET.exists() else 0),
    }


def run_compose(
    settings: Settings, *args: str, profiles: tuple[str, ...] = (), check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``docker compose -p PROJECT -f docker-compose.yml -f models.yml ... ARGS`` with the
    appliance's environment; models.yml (the served models' services, when there are any) is
    written from the state first.

    Raises:
        ServingError: it failed and ``check`` is set (the message ends with its output).
    """
    path = state_path(settings)
    if not path.is_file():
        write_state(path, ApplianceState())
    state = read_state(path)
    environment = compose_environment(settings, state)
    prepare_log_folders(settings, state)
    models = write_models_compose(settings.compose_dir, state, settings)
    # --env-file: the state again, and no reading of a .env in the checkout (pydantic-settings
    # has read that one already, under the settings' own names).
    files = ["-f", str(COMPOSE_FILE), *(["-f", str(models)] if models else [])]
    command = [*compose_command(), "-p", settings.compose_project, *files, "--env-file", str(path)]
    for profile in profiles:
        command += ["--profile", profile]
    inherited = {key: value for key, value in os.environ.items() if not key.startswith(PREFIX)}
    done = subprocess.run(
        [*command, *args], capture_output=True, text=True, env={**inherited, **environment}, check=False
    )
    if check and done.returncode != 0:
        raise ServingError(f"docker compose {' '.join(args)} failed:\n{(done.stdout + done.stderr)[-2000:]}")
    return done
