"""Appliance benchmark: cold `up`, registered -> serving, requests during a swap, idle memory.

Runs the real stack under its own compose project, ports and home, then tears it down.
Writes benchmarks/results/appliance.json and prints a summary. `make bench` runs it.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "appliance.json"
SWAP_REQUESTS = 2000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def configure() -> None:
    suffix = uuid.uuid4().hex[:8]
    os.environ.update({
        "ONEBOX_HOME": tempfile.mkdtemp(prefix="onebox-bench-"),
        "ONEBOX_RUNTIME": "compose",
        "ONEBOX_COMPOSE_PROJECT": f"onebox-bench-{suffix}",
        "ONEBOX_MODEL_NAME": f"bench-{suffix}",
        "ONEBOX_SERVE_PORT": str(free_port()),
        "ONEBOX_MLFLOW_PORT": str(free_port()),
        "ONEBOX_PREFECT_PORT": str(free_port()),
    })  # fmt: skip


def container_memory(runtime) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """MiB per running container of the project: usage less page cache, as `docker stats` shows."""
    from serving.images import _docker

    memory = {}
    project = runtime.settings.compose_project
    for container in _docker().containers.list(filters={"label": f"com.docker.compose.project={project}"}):
        stats = container.stats(stream=False)["memory_stats"]
        cache = stats.get("stats", {}).get("total_inactive_file", stats.get("stats", {}).get("inactive_file", 0))
        memory[container.labels["com.docker.compose.service"]] = round((stats["usage"] - cache) / 2**20, 1)
    return memory


def main() -> int:
    configure()
    from flows.environment import prepare_environment
    from storage.settings import get_settings

    settings = get_settings()
    prepare_environment(settings)
    from flows.pipeline import training_pipeline
    from flows.promote import deploy_and_promote
    from serving.compose import ComposeRuntime
    from serving.images import build_appliance_images, remove_model_images
    from serving.loadtest import SteadyLoad

    runtime = ComposeRuntime(settings)
    results: dict[str, object] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    try:
        started = time.perf_counter()
        build_appliance_images(settings)
        results["image_check_s"] = round(time.perf_counter() - started, 1)  # all cached after the first build
        started = time.perf_counter()
        runtime.up()
        results["cold_up_to_healthy_s"] = round(time.perf_counter() - started, 1)

        first = training_pipeline(epochs=3, seed=0, deploy=True)
        second = training_pipeline(epochs=3, seed=1, deploy=False)  # registered, not yet serving
        with SteadyLoad(settings.serve_url, clients=3, rate_per_client=40) as load:
            time.sleep(2)
            started = time.perf_counter()
            deploy_and_promote(settings, second.model_version, runtime=runtime)
            total = time.perf_counter() - started
            # The new version serves (and is production) before the old color drains and stops.
            retiring = runtime.last_deploy_phases.get("drain_and_stop_old", 0.0)
            results["registered_to_serving_s"] = round(total - retiring, 1)
            results["registered_to_old_color_stopped_s"] = round(total, 1)
            load.finish(at_least=SWAP_REQUESTS)
        results["swap_phases_s"] = runtime.last_deploy_phases
        results["swap_requests_sent"] = load.sent
        results["swap_requests_failed"] = len(load.failures)
        results["swap_answers_by_version"] = dict(load.answers)
        results["swap_failures_sample"] = load.failures[:5]
        results["versions"] = [first.model_version, second.model_version]

        time.sleep(15)  # let the stack settle before measuring idle memory
        memory = container_memory(runtime)
        results["idle_memory_mib"] = memory
        results["idle_memory_total_mib"] = round(sum(memory.values()), 1)
    finally:
        runtime.down(volumes=True)
        remove_model_images(settings)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    ok = results.get("swap_requests_failed") == 0
    print(f"\nwritten to {RESULTS}; swap {'had no failed requests' if ok else 'had FAILED requests'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
