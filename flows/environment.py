"""Process environment for onebox commands, set before Prefect or MLflow are imported.

Prefect reads its settings when it is imported, so this must run first; it only fills in
variables the user has not set.
"""

from __future__ import annotations

import os

from storage.credentials import client_environment
from storage.settings import Settings


def prepare_environment(settings: Settings) -> None:
    defaults = {
        # Prefect's database and its temporary server live in onebox's home, not in ~/.prefect.
        "PREFECT_HOME": str(settings.prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # The temporary server took 7-16 s to start on 2 cores; the default wait is 20 s.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "BENTOML_DO_NOT_TRACK": "true",
        # The ONNX exporter warns about optional torchvision ops onebox never uses.
        "TORCH_LOGS": os.environ.get("TORCH_LOGS", "-all"),
    }
    if settings.prefect_api_url:
        # The appliance's Prefect server records the run; the flow itself runs here, by the GPU.
        defaults["PREFECT_API_URL"] = settings.prefect_api_url
    # The login, for MLflow's and Prefect's clients (the appliance's servers ask for it once set).
    defaults.update(client_environment(settings.username, settings.password_value))
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
