"""One typed settings object for every path, URI and port onebox uses.

Values come from the environment (prefix ``ONEBOX_``) or a ``.env`` file; nothing is read or
created at import time: call :func:`get_settings`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ONEBOX_", env_file=".env", extra="ignore")

    home: Path = Field(
        default=Path(".onebox"),
        description="Holds datasets, the catalog, MLflow's database and artifacts, served models.",
    )
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default: SQLite in the home folder."
    )
    model_name: str = Field(default="onebox-classifier", description="Registered model name.")
    runtime: Literal["local"] = Field(default="local", description="What runs models: a local process.")
    serve_host: str = "127.0.0.1"
    serve_port: int = Field(default=3000, ge=1, le=65535)
    serve_ready_timeout_s: float = Field(default=90.0, gt=0)

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
        return self.tracking_uri or f"sqlite:///{self.mlflow_db_path}"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

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
    def serve_url(self) -> str:
        return f"http://{self.serve_host}:{self.serve_port}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
