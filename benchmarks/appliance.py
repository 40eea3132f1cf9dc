"""Appliance benchmark: cold `up`, registered -> serving, requests during a swap, idle memory
with one served model and with a second one beside it.

Runs against the real stack that benchmarks/suite.py brings up under its own compose project,
ports and home.
"""

from __future__ import annotations

import time
from typing import Any

from serving.compose import ComposeRuntime
from storage.settings import Settings

SWAP_REQUESTS = 2000
FIRST_MODEL = "digits"  # what the benchmark trains: the bundled digits, under their own name
SECOND_MODEL = "digits-second"  # the same bundle served again as another model, for its memory
# Published minimums of what onebox replaces, for the footprint comparison.
KUBEFLOW_RECOMMENDED = {"memory_gib": 16, "cores": 8, "source": "kubeflow/manifests README (recommended for a cluster)"}
CLEARML_RECOMMENDED = {"memory_gib": 8, "source": "ClearML server documentation (recommended memory)"}


def _proc_memory(pid: int) -> tuple[int, int] | None:
    """(RSS, PSS) in bytes of a process, from /proc/PID/smaps_rollup; None when unreadable."""
    try:
        text = open(f"/proc/{pid}/smaps_rollup").read()  # noqa: SIM115
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key] = int(rest.split()[0]) * 1024
    return values.get("Rss", 0), values.get("Pss", 0)


def container_memory(runtime: ComposeRuntime) -> dict[str, dict[str, float]]:
    """MiB per running container: cgroup usage less page cache (as `docker stats`); RSS and PSS of its processes."""
    from serving.docker_client import project_containers

    memory: dict[str, dict[str, float]] = {}
    for container in project_containers(runtime.settings.compose_project):
        stats = container.stats(stream=False)["memory_stats"]
        cache = stats.get("stats", {}).get("total_inactive_file", stats.get("stats", {}).get("inactive_file", 0))
        row = {"usage_mib": round((stats["usage"] - cache) / 2**20, 1)}
        top = container.top(ps_args="-o pid")
        pids = [int(process[0]) for process in top.get("Processes") or []]
        per_process = [m for m in (_proc_memory(pid) for pid in pids) if m is not None]
        if per_process:
            row["rss_mib"] = round(sum(m[0] for m in per_process) / 2**20, 1)
            row["pss_mib"] = round(sum(m[1] for m in per_process) / 2**20, 1)
            row["processes"] = len(pids)
        memory[container.labels["com.docker.compose.service"]] = row
    return memory


def measure_cold_up(settings: Settings, runtime: ComposeRuntime) -> dict[str, Any]:
    from serving.image_builds import build_appliance_images

    started = time.perf_counter()
    build_appliance_images(settings)
    image_check = time.perf_counter() - started  # all cached after the first build
    started = time.perf_counter()
    runtime.up()
    return {"image_check_s": round(image_check, 1), "cold_up_to_healthy_s": round(time.perf_counter() - started, 1)}


def measure_swap(settings: Settings, runtime: ComposeRuntime) -> dict[str, Any]:
    """Train two versions; swap the second in under steady load; then idle memory."""
    from flows.pipeline import training_pipeline
    from flows.promote import deploy_and_promote
    from serving.loadtest import SteadyLoad

    results: dict[str, Any] = {}
    first = training_pipeline(epochs=3, seed=0, deploy=True)
    second = training_pipeline(epochs=3, seed=1, deploy=False)  # registered, not yet serving
    with SteadyLoad(settings.serve_url, clients=3, rate_per_client=40) as load:
        time.sleep(2)
        started = time.perf_counter()
        deploy_and_promote(settings, second.model_name, second.model_version, runtime=runtime)
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
    results["serving_model"] = second.model_name
    results["serving_version"] = second.model_version
    results["serving_run_id"] = second.run_id
    return results


def measure_idle_memory(runtime: ComposeRuntime, *, settle_s: float = 15) -> dict[str, Any]:
    time.sleep(settle_s)  # let the stack settle before measuring idle memory
    memory = container_memory(runtime)
    total = {
        key: round(sum(row.get(key, 0.0) for row in memory.values()), 1) for key in ("usage_mib", "rss_mib", "pss_mib")
    }
    return {
        "idle_memory_mib": memory,
        "idle_memory_total_mib": total,
        "compare": {"kubeflow": KUBEFLOW_RECOMMENDED, "clearml": CLEARML_RECOMMENDED},
    }


def measure_second_model_memory(
    settings: Settings, runtime: ComposeRuntime, one_model: dict[str, Any], *, settle_s: float = 15
) -> dict[str, Any]:
    """Serve the production bundle a second time, under another name, beside the first (as a
    second task would be: its own pair of containers, ``other_model_workers`` workers); measure the
    idle appliance again, then stop it. ``one_model``: :func:`measure_idle_memory`'s result."""
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from serving.metadata import METADATA_FILE
    from storage.registry import PRODUCTION, materialize_bundle, version_by_alias

    production = version_by_alias(settings, FIRST_MODEL, PRODUCTION)
    assert production is not None
    name = SECOND_MODEL
    with tempfile.TemporaryDirectory(prefix="onebox-bench-second-") as folder:
        bundle = Path(
            shutil.copytree(materialize_bundle(settings, FIRST_MODEL, production.version), Path(folder) / "bundle")
        )
        metadata = json.loads((bundle / METADATA_FILE).read_text())
        (bundle / METADATA_FILE).write_text(json.dumps({**metadata, "model_name": name}))
        runtime.deploy(bundle)
    two = measure_idle_memory(runtime, settle_s=settle_s)
    runtime.stop(name)
    one_total, two_total = one_model["idle_memory_total_mib"], two["idle_memory_total_mib"]
    return {
        "two_models_idle_memory_mib": two["idle_memory_mib"],
        "two_models_idle_memory_total_mib": two_total,
        "extra_model_memory_mib": {key: round(two_total[key] - one_total[key], 1) for key in one_total},
        "other_model_workers": settings.other_model_workers,
    }
