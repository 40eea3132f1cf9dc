"""Runs whose process died: a training killed mid-way (SIGKILL, out of memory, a power cut) ends nothing itself.

Every training holds a locked record (``flows/live_runs.py``); the next training, and any
training waiting for the ``gpu`` slot, settles each record whose lock is free: it releases the
dead one's ``gpu`` lease, marks its Prefect flow run (and task runs) Crashed and its MLflow run
FAILED. MLflow runs also record the host and process that started them, which catches a run
that died before its record named it. They stay resumable (``onebox train --resume RUN_ID``):
a FAILED run with a checkpoint continues.
"""

from __future__ import annotations

import os
import platform
from uuid import UUID

from flows import live_runs
from storage.registry import configure_mlflow
from storage.settings import Settings

HOST_TAG, PID_TAG = "onebox.host", "onebox.pid"
FAILED_BECAUSE_TAG = "onebox.failed_because"


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
            client.set_tag(run.info.run_id, FAILED_BECAUSE_TAG, f"its process {pid} ended without ending the run")
            abandoned.append(run.info.run_id)
    return abandoned


def recover_killed_trainings(settings: Settings) -> list[live_runs.TrainingRecord]:
    """Settle every training whose process died: its lease released, its runs marked; the records settled.

    Uses the Prefect server PREFECT_API_URL names; a record from another server finds no flow run
    there and its lease is left to expire on its own server (60 s).
    """
    with live_runs.claim_dead(settings) as dead:
        for record in dead:
            because = f"its process {record.pid} on {record.host} died (killed?) without ending the run"
            if record.lease_id:
                release_lease(record.lease_id)
            if not record.flow_run_id.startswith("no-flow-run-"):
                crash_flow_run(record.flow_run_id, because)
            if record.mlflow_run_id:
                fail_mlflow_run(settings, record.mlflow_run_id, because)
    return dead


def release_lease(lease_id: str) -> None:
    """Give a `gpu` lease's slot back; a lease the server no longer knows (expired, released) is no error."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.release_concurrency_slots_with_lease(UUID(lease_id))


def crash_flow_run(flow_run_id: str, because: str) -> None:
    """Mark the flow run, and its task runs that had not finished, Crashed (those already final stay)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    run_id = UUID(flow_run_id)
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:
            return  # recorded on another Prefect server
        for task_run in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))):
            if task_run.state is not None and not task_run.state.is_final():
                client.set_task_run_state(task_run.id, Crashed(message=because), force=True)
        if run.state is not None and not run.state.is_final():
            client.set_flow_run_state(run_id, Crashed(message=because), force=True)


def fail_mlflow_run(settings: Settings, run_id: str, because: str) -> None:
    """Mark the MLflow run FAILED if it is still RUNNING (a finished or missing run is left alone)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(settings.mlflow_tracking_uri)
    try:
        status = client.get_run(run_id).info.status
    except MlflowException:
        return
    if status == "RUNNING":
        client.set_terminated(run_id, "FAILED")
        client.set_tag(run_id, FAILED_BECAUSE_TAG, because)
