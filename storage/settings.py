"""One typed settings object for every path, URI and port onebox uses.

Values come from the environment (prefix ``ONEBOX_``) or a ``.env`` file; nothing is read or
created at import time: call :func:`get_settings`.
"""

from __future__ import annotations

import json
from functools import lru_cache
from ipaddress import IPv4Network
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from storage.credentials import MIN_API_KEY, MIN_PASSWORD, USERNAME, check_secret, exposure_problem
from storage.limits import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_IMAGE_PIXELS, InputLimits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ONEBOX_", env_file=".env", extra="ignore")

    home: Path = Field(
        default=Path(".onebox"),
        description="Holds datasets, the catalog, MLflow's database and artifacts, served models.",
    )
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default: SQLite in the home folder."
    )
    default_model: str | None = Field(
        default=None, description="The model /predict answers for; default: the first model served."
    )
    runtime: Literal["auto", "local", "compose"] = Field(
        default="auto",
        description="What runs models: a local process, or the docker compose appliance; auto: compose when it is up.",
    )
    serve_host: str = "127.0.0.1"
    serve_port: int = Field(default=3000, ge=1, le=65535)
    serve_ready_timeout_s: float = Field(default=90.0, gt=0)
    serve_workers: int = Field(
        default=2, ge=1, le=64, description="Model server worker processes (one per CPU core the model may use)."
    )
    other_model_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Worker processes of each served model but the default one (each costs memory all the time).",
    )
    # What one input may cost (storage/limits.py): checked from headers, before decoding or parsing.
    max_image_pixels: int = Field(
        default=DEFAULT_MAX_IMAGE_PIXELS,
        ge=1,
        description="The most pixels an image may declare (width x height), at serving and at import.",
    )
    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES,
        ge=1024,
        description="The largest request body a model server (and the gateway) accepts, in bytes.",
    )
    # The appliance (docker compose): images, ports published on `bind`, the compose project.
    base_image: str = Field(default="python:3.11-slim", description="Base of every image; bootstrapped if unreachable.")
    image_tag: str = Field(default="latest", description="Tag of the appliance's own images.")
    compose_project: str = "onebox"
    bind: str = Field(default="127.0.0.1", description="Where published ports listen; see README before changing.")
    hostnames: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9.:\[\]-]*(,[A-Za-z0-9.:\[\]-]+)*$",
        description="Comma-separated names and addresses the box is reached by off loopback (for MLflow's Host check).",
    )
    # Credentials (storage/credentials.py): required to publish the ports beyond loopback.
    username: str = Field(
        default="onebox",
        pattern=USERNAME.pattern,
        description="The login of MLflow, Prefect and the labeling page once a password is set.",
    )
    password: SecretStr | None = Field(
        default=None,
        description="The password of that login; unset: no login (loopback only).",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="What /predict through the gateway asks for (Authorization: Bearer KEY, or X-API-Key).",
    )
    local_prefect_port: int = Field(
        default=4201,
        ge=1,
        le=65535,
        description="The local runtime's Prefect server (UI and API) on 127.0.0.1; the appliance's is prefect_port.",
    )
    mlflow_port: int = Field(default=5000, ge=1, le=65535)
    prefect_port: int = Field(default=4200, ge=1, le=65535)
    label_port: int = Field(
        default=3100,
        ge=1,
        le=65535,
        description="The labeling page: `onebox label` on 127.0.0.1, the appliance's labeling service on bind.",
    )
    # What each container may take (docker-compose.yml, serving/compose_models.py): a model that
    # is sent images at the pixel limit, or a service that leaks, is stopped at its limit (and
    # restarted) instead of taking the host's memory from the rest.
    model_memory_mb: int = Field(
        default=3072, ge=256, description="Memory limit of each served model's container (MiB), all its workers."
    )
    service_memory_mb: int = Field(
        default=2048, ge=256, description="Memory limit of the MLflow, Prefect and labeling containers (MiB) each."
    )
    subnet: IPv4Network | None = Field(
        default=None,
        description="The appliance's Docker network, a /24 or larger (10.99.0.0/24); default: a free one, picked once.",
    )
    drain_s: float = Field(default=5.0, ge=0, description="How long the old model color keeps serving after a swap.")
    wheelhouse: Path | None = Field(default=None, description="Wheel cache; default ~/.cache/onebox/wheelhouse.")
    # The drift check (flows/drift.py): the newest records of the served version against its reference.
    drift_window: int = Field(default=500, ge=10, le=100_000, description="Newest predictions a drift check compares.")
    drift_min_records: int = Field(
        default=100, ge=10, description="Fewer predictions than this: the drift check says not enough data."
    )
    drift_false_alarm_rate: float = Field(
        default=0.01, gt=0, lt=1, description="How often a drift check may flag clean traffic, all tests together."
    )
    drift_permutations: int = Field(default=1000, ge=100, le=100_000, description="Of the embedding's MMD test.")
    drift_low_confidence: float = Field(
        default=0.5, ge=0, le=1, description="A prediction less confident than this goes to the labeling inbox."
    )
    drift_inbox_per_check: int = Field(
        default=50, ge=0, le=10_000, description="At most this many images a drift check adds to a model's inbox."
    )
    # The prediction log (serving/prediction_log.py). The model servers read these from their
    # environment under the same names: the serving image has no pydantic-settings.
    prediction_log: bool = Field(
        default=True, description="Record every prediction of every served model in $ONEBOX_HOME/predictions/NAME."
    )
    keep_inputs: bool = Field(
        default=True, description="Keep each logged prediction's input image too (what gets labeled)."
    )
    kept_inputs_max_mb: float = Field(
        default=500.0, gt=0, description="Kept input images of one model, at most (MB); the oldest go first."
    )
    prediction_log_max_mb: float = Field(
        default=1000.0, gt=0, description="Prediction records of one model, at most (MB); the oldest days go first."
    )
    prediction_log_days: int = Field(
        default=30, ge=1, le=36500, description="Records and kept images older than this many days are deleted."
    )
    prediction_log_queue: int = Field(
        default=10000,
        ge=1,
        le=1_000_000,
        description="Records waiting to be written, at most, per server worker; beyond it they are dropped (counted).",
    )

    @field_validator("subnet")
    @classmethod
    def _room_for_the_colors(cls, subnet: IPv4Network | None) -> IPv4Network | None:
        if subnet is not None and subnet.prefixlen > 24:
            raise ValueError(f"{subnet} is too small: give a /24 or larger (each model color takes a fixed address)")
        return subnet

    @field_validator("password")
    @classmethod
    def _guessable_password(cls, password: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if password is None or not password.get_secret_value():
            return None  # empty is unset (the env file onebox writes says ONEBOX_PASSWORD= for none)
        username = info.data.get("username", "")
        check_secret("ONEBOX_PASSWORD", password.get_secret_value(), minimum=MIN_PASSWORD, username=username)
        return password

    @field_validator("api_key")
    @classmethod
    def _guessable_key(cls, api_key: SecretStr | None) -> SecretStr | None:
        if api_key is None or not api_key.get_secret_value():
            return None
        check_secret("ONEBOX_API_KEY", api_key.get_secret_value(), minimum=MIN_API_KEY)
        return api_key

    @model_validator(mode="after")
    def _both_credentials(self) -> Settings:
        password, api_key = self.password_value, self.api_key_value
        if (password is None) != (api_key is None):
            given, missing = (
                ("ONEBOX_PASSWORD", "ONEBOX_API_KEY") if api_key is None else ("ONEBOX_API_KEY", "ONEBOX_PASSWORD")
            )
            raise ValueError(f"{given} is set but {missing} is not: set both (or neither, on loopback)")
        if api_key is not None and api_key == password:
            raise ValueError("ONEBOX_API_KEY must differ from ONEBOX_PASSWORD")
        return self

    @property
    def password_value(self) -> str | None:
        return self.password.get_secret_value() if self.password is not None else None

    @property
    def api_key_value(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key is not None else None

    @property
    def exposure_problem(self) -> str | None:
        """Why the appliance may not publish its ports on ``bind``; None when it may."""
        return exposure_problem(self.bind, password=self.password_value, api_key=self.api_key_value)

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, home: Path) -> Path:
        # Processes started later (the model server, Prefect) may run from another folder.
        return home.expanduser().resolve()

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def catalog_path(self) -> Path:
        return self.home / "catalog.db"

    @property
    def mlflow_db_path(self) -> Path:
        return self.home / "mlflow.db"

    @property
    def mlflow_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        if self.runtime == "compose":
            return f"http://127.0.0.1:{self.mlflow_port}"
        return f"sqlite:///{self.mlflow_db_path}"

    @property
    def prefect_api_url(self) -> str | None:
        """The appliance's Prefect server; None: the local runtime's own (flows/prefect_server.py)."""
        return f"http://127.0.0.1:{self.prefect_port}/api" if self.runtime == "compose" else None

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def predictions_dir(self) -> Path:
        """The prediction log of every served model (storage/prediction_log.py)."""
        return self.home / "predictions"

    @property
    def inbox_dir(self) -> Path:
        """Each model's labeling inbox (storage/inbox.py)."""
        return self.home / "inbox"

    @property
    def models_dir(self) -> Path:
        """Served-model bundles (ONNX model + metadata), one folder per registered version."""
        return self.home / "models"

    @property
    def run_dir(self) -> Path:
        """Pid files, server logs and other state of running processes."""
        return self.home / "run"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def wheelhouse_dir(self) -> Path:
        return self.wheelhouse or Path.home() / ".cache" / "onebox" / "wheelhouse"

    @property
    def compose_dir(self) -> Path:
        """The appliance's persisted state: which image each color runs, which color is live."""
        return self.home / "compose"

    @property
    def input_limits(self) -> InputLimits:
        """The limits a model server applies, as it reads them from its environment."""
        return InputLimits(max_image_pixels=self.max_image_pixels, max_body_bytes=self.max_body_bytes)

    @property
    def serve_url(self) -> str:
        return f"http://{self.serve_host}:{self.serve_port}"

    def environment(self) -> dict[str, str]:
        """Every setting that has a value, under its environment variable, as Settings() reads it back."""
        values = self.model_dump(mode="json")
        # Secrets dump as asterisks; the services need their values ("" for none: compose
        # interpolates them, and an empty one reads back as unset).
        values.update(password=self.password_value or "", api_key=self.api_key_value or "")
        return {
            env_name(field): value if isinstance(value, str) else json.dumps(value)
            for field, value in values.items()
            if value is not None
        }


def env_name(field: str) -> str:
    """The environment variable that sets the field ``field`` of :class:`Settings`."""
    if field not in Settings.model_fields:
        raise KeyError(f"{field!r} is not a setting")
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
