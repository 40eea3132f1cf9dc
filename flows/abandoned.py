"""Runs whose process died: a training killed mid-way (SIGKILL, out of memory, a power cut) never ends its MLflow run.

Each run records the host and process that started it; the next run on the same host marks
those whose process is gone FAILED, so the UI does not show them running forever. They stay
resumable (``onebox train --resume RUN_ID``): a FAILED run with a checkpoint continues.
"""

from __future__ import annotations

import os
import platform

from storage.registry import configure_mlflow
from storage.settings import Settings

HOST_TAG, PID_TAG = "onebox.host", "onebox.pid"


def process_tags() -> dict[str, str]:
    """The tags that let a later run tell whether this one's process is still alive."""
    return {HOST_TAG: platform.node(), PID_TAG: str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def fail_abandoned_runs(settings: Settings) -> list[str]:
    """Mark FAILED every RUNNING run started on this host by a process that no longer exists; their ids."""
    from mlflow import MlflowClient

    experiment_id = configure_mlflow(settings)
    client = MlflowClient(settings.mlflow_tracking_uri)
    query = f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{platform.node()}'"
    abandoned = []
    for run in client.search_runs([experiment_id], filter_string=query, max_results=1000):
        pid = run.data.tags.get(PID_TAG, "")
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            client.set_terminated(run.info.run_id, "FAILED")
            client.set_tag(run.info.run_id, "onebox.failed_because", f"its process {pid} ended without ending the run")
            abandoned.append(run.info.run_id)
    return abandoned
