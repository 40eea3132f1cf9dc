"""Where the onebox checkout is: the source the worker mounts, the flows' deployments name, and
the images and the stack are built from."""

from __future__ import annotations

from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = SOURCE_ROOT / "compose"  # Dockerfiles, gateway config, image requirements
COMPOSE_FILE = SOURCE_ROOT / "docker-compose.yml"
