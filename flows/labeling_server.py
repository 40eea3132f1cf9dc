"""The labeling page's server: the app of serving/labeling.py, with the event after a merge.

``onebox label`` runs it on 127.0.0.1 (embedded runtime); the appliance's ``labeling`` service
runs ``python3 -m flows.labeling_server`` on the host's network, on ONEBOX_BIND. A merge posts
``onebox.dataset.version.created`` to Prefect (flows/dataset_events.py); the page shows what
became of it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from storage.credentials import client_environment
from storage.inbox_merge import MergeResult
from storage.settings import Settings, get_settings

if TYPE_CHECKING:
    from fastapi import FastAPI


def labeling_app(settings: Settings) -> FastAPI:
    from flows.dataset_events import announce_new_version
    from serving.labeling import create_labeling_app

    def announce(result: MergeResult) -> str:
        return announce_new_version(settings, result).message

    return create_labeling_app(settings, announce=announce)


def serve_labeling(settings: Settings, *, host: str) -> None:
    """Serve the labeling page on ``host``:``settings.label_port`` until interrupted."""
    import uvicorn

    uvicorn.run(labeling_app(settings), host=host, port=settings.label_port, log_level="warning", access_log=False)


def main() -> None:
    settings = get_settings()
    if problem := settings.exposure_problem:
        raise SystemExit(f"refusing to start: {problem}")
    # The login, for the MLflow and Prefect clients the page uses (the host's commands set it the same way).
    for name, value in client_environment(settings.username, settings.password_value).items():
        os.environ.setdefault(name, value)
    serve_labeling(settings, host=settings.bind)


if __name__ == "__main__":
    main()
