"""The prediction log's settings as a model server reads them: from its environment.

They are settings of storage/settings.py (``prediction_log``, ``keep_inputs`` ...), read here under
the same names as the server's other variables are, because the serving image has no
pydantic-settings; the runtimes hand them over (:func:`log_environment`) with
:data:`LOG_DIR_VARIABLE`, the folder the server writes to (the container sees another path than
the host). No numpy here: the compose runtime imports this to write the models' services.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from storage.errors import ModelError

LOG_DIR_VARIABLE = "ONEBOX_PREDICTION_LOG_DIR"  # the log's root: $ONEBOX_HOME/predictions, or the container's mount
SETTINGS_PREFIX = "ONEBOX_"


@dataclass(frozen=True)
class PredictionLogConfig:
    """The log's settings; each field but ``directory`` is the setting of the same name."""

    directory: Path | None = None  # None: the log is off
    prediction_log: bool = True
    keep_inputs: bool = True
    kept_inputs_max_mb: float = 500.0
    prediction_log_max_mb: float = 1000.0
    prediction_log_days: int = 30
    prediction_log_queue: int = 10000

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> PredictionLogConfig:
        """The settings in ``environ`` (ONEBOX_PREDICTION_LOG ...), defaults for those not set.

        Raises:
            ModelError: a value of the wrong kind or out of range (the server does not start).
        """
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name == "directory":
                continue
            name = f"{SETTINGS_PREFIX}{spec.name.upper()}"
            raw = environ.get(name, "").strip()
            if raw:
                values[spec.name] = _parse(name, raw, type(spec.default))
        config = cls(directory=Path(environ[LOG_DIR_VARIABLE]) if environ.get(LOG_DIR_VARIABLE) else None, **values)
        for name, low in (("kept_inputs_max_mb", 0.0), ("prediction_log_max_mb", 0.0)):
            if getattr(config, name) <= low:
                raise ModelError(f"{SETTINGS_PREFIX}{name.upper()} must be above 0, not {getattr(config, name)}")
        for name in ("prediction_log_days", "prediction_log_queue"):
            if getattr(config, name) < 1:
                raise ModelError(f"{SETTINGS_PREFIX}{name.upper()} must be 1 or more, not {getattr(config, name)}")
        return config

    @property
    def enabled(self) -> bool:
        return self.prediction_log and self.directory is not None


def _parse(name: str, raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            if raw.lower() not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(raw)
            return raw.lower() in {"1", "true", "yes", "on"}
        return kind(raw)
    except ValueError:
        raise ModelError(f"{name} is {raw!r}: give a {kind.__name__}") from None


def log_environment(settings_environment: Mapping[str, str]) -> dict[str, str]:
    """The log's settings out of ``Settings.environment()``, as a model server reads them: every
    field but the folder, which the runtime names (the container sees another path than the host)."""
    names = [
        f"{SETTINGS_PREFIX}{spec.name.upper()}" for spec in fields(PredictionLogConfig) if spec.name != "directory"
    ]
    return {name: settings_environment[name] for name in names}
