"""The one rule for the names people give things: dataset names and model names.

A name ends up in folder names (``models/NAME/VERSION``), URLs (``/models/NAME/predict``),
docker image tags and MLflow's registry, so it is refused before anything is stored unless it is
safe in all of them: lowercase, no path characters, no spaces, at most 64 characters.
"""

from __future__ import annotations

import re

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
NAME_RULE = "use 1-64 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"


def is_safe_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None  # fullmatch: "$" alone lets a trailing newline in


def name_problem(kind: str, name: str) -> str | None:
    """Why ``name`` cannot name a ``kind`` ("dataset", "model"), in one line; None when it can."""
    if is_safe_name(name):
        return None
    return f"{kind} name {name!r} is not valid: {NAME_RULE}"
