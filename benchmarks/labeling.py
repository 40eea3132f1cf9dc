"""How long the labeling page makes a labeler wait: per image, and for "Create dataset version".

``python -m benchmarks.labeling`` runs the real labeling server (``python -m
flows.labeling_server``) on a home with the bundled digits (1,797 images) as the production
model's dataset and 100 images in its inbox, then does what the page does for each image: post
the label (the answer is the next state) and fetch the next image. The round trip per image is
what a labeler waits between two key presses at most (the page fetches the next image ahead);
then the merge of the 100 labeled images into a new version of the whole dataset.
Results: benchmarks/results/labeling.json.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.servers import free_port

IMAGES = 100


def measure(folder: Path) -> dict[str, Any]:
    from storage.datasets import ensure_builtin_dataset
    from storage.model_binding import binding_tags
    from storage.registry import PRODUCTION, mlflow_client
    from storage.settings import Settings
    from tests.inbox_fixtures import fill_inbox, labeling_server

    settings = Settings(home=folder / "home", tracking_uri=f"sqlite:///{folder / 'mlflow.db'}", label_port=free_port())
    parent = ensure_builtin_dataset(settings)
    client = mlflow_client(settings)
    client.create_registered_model("digits")
    tags = {"dataset": f"{parent.name}:{parent.version}", **binding_tags(parent.classes, parent.image_shape)}
    version = client.create_model_version("digits", source=(folder / "model").as_uri(), tags=tags)
    client.set_registered_model_alias("digits", PRODUCTION, version.version)
    inbox = fill_inbox(settings, folder / "seen", IMAGES, start=0)
    truth = {image.sha256: image.truth for image in inbox}
    round_trips = []
    with labeling_server(settings) as url, httpx.Client(base_url=url, timeout=60) as http:
        page = "/label/digits"
        state = http.get(f"{page}/state").json()
        while state["current"] is not None:
            started = time.perf_counter()
            sha = state["current"]["sha256"]
            state = http.post(f"{page}/label", json={"sha256": sha, "label": truth[sha], "by": "bench"}).json()
            if state["current"] is not None:
                http.get(state["current"]["image"]).raise_for_status()
            round_trips.append(time.perf_counter() - started)
        started = time.perf_counter()
        made = http.post(f"{page}/merge", json={"by": "bench"}, timeout=600).json()
        merge_s = time.perf_counter() - started
    ordered = sorted(round_trips)
    return {
        "images_labeled": len(round_trips),
        "label_round_trip_ms": {
            "p50": round(1000 * statistics.median(ordered), 1),
            "p99": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 1),
            "max": round(1000 * ordered[-1], 1),
        },
        "server_seconds_for_100_images": round(sum(round_trips), 2),
        "merge_seconds": round(merge_s, 2),
        "merged_version_images": made["images"],
        "parent_images": parent.num_images,
    }


def main() -> None:
    import json

    with tempfile.TemporaryDirectory(prefix="onebox-bench-labeling-") as folder:
        results = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
            **measure(Path(folder)),
        }
    target = Path(__file__).resolve().parent / "results" / "labeling.json"
    target.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    print(f"-> {target}")


if __name__ == "__main__":
    main()
