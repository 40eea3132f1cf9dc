"""What the input checks cost a small upload, in process (no HTTP): ``python -m benchmarks.input_limits``.

The decision it backs (serving/predictor.py): an upload is decoded inline unless its header
declares more than INLINE_DECODE_PIXELS, because a hop to a worker thread and back costs more
than decoding a small image. Measured per request on the served path:
  - predicting an 8x8 PNG inline (the common case),
  - the extra header read that picks inline or thread (``declared_pixels``),
  - the same prediction through ``asyncio.to_thread`` (what every upload would pay if all went
    to a thread),
  - the request-limit middleware's checks (serving/request_limits.py) on one request.
Results go to benchmarks/results/input_limits.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "input_limits.json"
ROUNDS = 500


def per_call_us(calls: dict[str, Callable[[], Any]], rounds: int = ROUNDS, runs: int = 9) -> dict[str, float]:
    """Microseconds per call of each of ``calls``: the fastest of ``runs`` runs of ``rounds``
    calls, the runs of all of them interleaved, so that a busy machine slows each alike (the
    fastest run is the one least disturbed by other work)."""
    timings: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            started = time.perf_counter()
            for _ in range(rounds):
                call()
            timings[name].append((time.perf_counter() - started) / rounds * 1e6)
    return {name: min(values) for name, values in timings.items()}


def main() -> None:
    from serving.metadata import MODEL_DIR_VARIABLE
    from serving.model_routes import ServedModels
    from serving.predictor import OnnxPredictor
    from serving.request_limits import RequestLimits
    from storage.images import declared_pixels
    from tests.conftest import png_bytes
    from tests.serving.conftest import digits_bundle, lit_pixel

    bundle = digits_bundle(Path(tempfile.mkdtemp(prefix="onebox-bench-limits-")) / "digits")
    predictor = OnnxPredictor.from_directory(bundle)
    image = png_bytes(lit_pixel((1, 8, 8), 3))
    loop = asyncio.new_event_loop()
    hop = lambda: loop.run_until_complete(asyncio.to_thread(predictor.predict_image, image))  # noqa: E731
    loop.run_until_complete(asyncio.to_thread(predictor.predict_image, image))  # start the thread pool

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        return None

    middleware = RequestLimits(inner, models=ServedModels.from_environment({MODEL_DIR_VARIABLE: str(bundle)}))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "headers": [(b"content-type", b"multipart/form-data; boundary=x"), (b"content-length", b"300")],
    }
    checks = lambda: loop.run_until_complete(middleware(scope, None, None))  # type: ignore[arg-type]  # noqa: E731
    bare = lambda: loop.run_until_complete(inner(scope, None, None))  # noqa: E731
    measured = per_call_us(
        {
            "predict_inline_us": lambda: predictor.predict_image(image),
            "header_read_us": lambda: declared_pixels(image),
            "predict_through_a_thread_us": hop,
            "checks": checks,
            "bare": bare,
        },
        rounds=500,
    )
    results = {name: value for name, value in measured.items() if name.endswith("_us")}
    results["request_limit_checks_us"] = measured["checks"] - measured["bare"]
    loop.close()
    record = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.python_version()}, load average {os.getloadavg()[0]:.1f}",
        "results": {name: round(value, 1) for name, value in results.items()},
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
