"""Runs on the appliance's worker, started from a terminal: what the UI's Run button does, plus following.

A run started here is the same as one started in the Prefect UI: a flow run of the registered
deployment, picked up by a worker of the `onebox` pool. ``follow`` prints its logs as they arrive.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from flows.deployments import WORK_POOL, deployment_name
from storage.errors import OneboxError
from storage.settings import Settings

WORKER_FRESH = timedelta(seconds=90)
# Every task's last line, identical for all of them: noise when read without the task's name.
QUIET = frozenset({"Finished in state Completed()"})  # a worker heartbeats every 30 s by default


@dataclass(frozen=True)
class Outcome:
    flow_run_id: str
    flow_run_name: str
    state: str  # Prefect's state name: Completed, Failed, Crashed, Cancelled
    message: str

    @property
    def completed(self) -> bool:
        return self.state == "Completed"


def online_workers() -> list[str]:
    """Names of workers that polled the `onebox` pool recently."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import WorkerStatus
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    with get_client(sync_client=True) as client:
        try:
            workers = client.read_workers_for_work_pool(WORK_POOL)
        except ObjectNotFound:
            return []
        except PrefectHTTPStatusError as error:  # this call reports a missing pool as a plain 404
            if error.response.status_code == 404:
                return []
            raise
    fresh_since = datetime.now(UTC) - WORKER_FRESH
    return [
        worker.name
        for worker in workers
        if worker.status == WorkerStatus.ONLINE and (worker.last_heartbeat_time or fresh_since) > fresh_since
    ]


def start(flow_name: str, parameters: dict[str, Any]) -> tuple[str, str]:
    """Create a flow run of the flow's deployment, as the UI's Run button does. Returns (id, name).

    Raises:
        OneboxError: the deployment is missing, or the server rejected a parameter.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    name = deployment_name(flow_name)
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(name)
        except ObjectNotFound as error:
            raise OneboxError(f"deployment {name!r} is not registered; `onebox register` registers it") from error
        try:
            run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        except PrefectHTTPStatusError as error:
            detail = error.response.json().get("detail", error.response.text)
            raise OneboxError(f"the Prefect server rejected the run: {detail}") from error
    return str(run.id), run.name


def follow(flow_run_id: str, echo: Callable[[str], None], *, poll_s: float = 1.0) -> Outcome:
    """Print the run's logs as they arrive until it ends; returns how it ended."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    run_id = UUID(flow_run_id)
    seen, last_pass = 0, False
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            finished = run.state is not None and run.state.is_final()
            while True:  # every log line so far, in pages
                logs = client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                    sort=LogSort.TIMESTAMP_ASC,
                    offset=seen,
                    limit=200,
                )
                for log in logs:
                    if log.message not in QUIET:
                        echo(f"{log.timestamp:%H:%M:%S} {log.message}")
                seen += len(logs)
                if len(logs) < 200:
                    break
            if finished and last_pass:
                assert run.state is not None
                return Outcome(flow_run_id, run.name, run.state.name or run.state.type.value, run.state.message or "")
            # The run's last lines reach the server just after its final state: one more pass.
            last_pass = finished
            time.sleep(max(poll_s, 2.0) if finished else poll_s)


def flow_run_url(settings: Settings, flow_run_id: str) -> str:
    return f"http://127.0.0.1:{settings.prefect_port}/runs/flow-run/{flow_run_id}"


def mlflow_run_for(settings: Settings, flow_run_id: str) -> str | None:
    """The MLflow run a training flow run logged to (tagged with the flow run's id)."""
    from mlflow import MlflowClient

    from storage.registry import configure_mlflow

    experiment = configure_mlflow(settings)
    runs = MlflowClient(settings.mlflow_tracking_uri).search_runs(
        [experiment], filter_string=f"tags.`onebox.prefect_flow_run_id` = '{flow_run_id}'", max_results=1
    )
    return runs[0].info.run_id if runs else None
