"""Importing a folder of real-size photos: images/s and peak memory of `onebox data import`.

A folder of RGB JPEGs of mixed sizes around 256x256 (10 classes) is generated once and cached
under benchmarks/results/cache/ (not in git); each import runs in a process of its own in a fresh
home, which reports its own peak RSS (VmHWM) and how long each pass took: the scan (read,
hash, header) and the conversion (decode, convert, store, copy). The target: 20,000 photos at
peak RSS under 1 GB.

``python -m benchmarks.dataset_import [--images N] [--sizes 64 224]`` runs it alone and writes
benchmarks/results/dataset_import.json; `make bench` runs it too.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = RESULTS / "cache"
IMAGES = 20_000
CLASSES = 10
SIZES = (64, 224)
RSS_TARGET_MIB = 1e9 / 2**20  # 1 GB


def peak_rss_kib() -> int:
    """This process's peak RSS since it started its program: VmHWM, which exec resets.

    getrusage's ru_maxrss is not reset by exec: a child forked from a large parent (a test run that
    imported torch) reports the parent's size.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux; no /proc elsewhere


def _write_photos(folder: Path, start: int, stop: int) -> None:
    """Photo-like JPEGs (smooth gradients and blobs, so they compress as photos do), 192-320 px a side."""
    import numpy as np
    from PIL import Image

    for index in range(start, stop):
        rng = np.random.default_rng(index)
        width, height = (int(v) for v in rng.integers(192, 321, 2))
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        colour = rng.uniform(0, 255, (3, 3)).astype(np.float32)
        pixels = colour[0] + np.multiply.outer(x / width, colour[1] - colour[0])
        pixels = pixels + np.multiply.outer(y / height, colour[2] - colour[0]) * 0.5
        cx, cy, radius = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(20, 90)
        pixels[(x - cx) ** 2 + (y - cy) ** 2 < radius**2] = rng.uniform(0, 255, 3)
        pixels += rng.normal(0, 6, pixels.shape).astype(np.float32)
        target = folder / f"class{index % CLASSES}" / f"{index:06d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(target, quality=85)


def photo_folder(images: int, *, cache: Path = CACHE) -> Path:
    """The cached folder of ``images`` photos, generated (in parallel) when missing."""
    folder = cache / f"photos-{images}"
    done = folder / ".complete"
    if done.is_file():
        return folder
    for c in range(CLASSES):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
    workers = os.cpu_count() or 1
    chunk = -(-images // (workers * 4))
    print(f"generating {images:,} photos in {folder} ...", flush=True)
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(workers) as pool:
        jobs = [pool.submit(_write_photos, folder, s, min(s + chunk, images)) for s in range(0, images, chunk)]
        for job in jobs:
            job.result()
    done.write_text(f"{time.perf_counter() - started:.0f} s\n")
    return folder


def _child(source: Path, home: Path, size: int) -> None:
    """In the measured process: import, then print timings and this process's peak RSS as JSON."""
    from storage.datasets import import_image_folder
    from storage.settings import Settings

    marks: dict[str, float] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if done == total:
            marks[phase] = time.perf_counter()

    started = time.perf_counter()
    version = import_image_folder(
        source, name="photos", settings=Settings(home=home), image_size=(size, size), resize="crop", progress=progress
    )
    finished = time.perf_counter()
    store = version.path / "images.u8"
    print(
        json.dumps(
            {
                "images": version.num_images,
                "image_shape": list(version.image_shape),
                "scan_s": round(marks["scan"] - started, 2),
                "convert_s": round(finished - marks["scan"], 2),
                "total_s": round(finished - started, 2),
                "images_per_s": round(version.num_images / (finished - started), 1),
                "peak_rss_mib": round(peak_rss_kib() / 1024, 1),
                "store_mib": round(store.stat().st_size / 2**20, 1),
            }
        )
    )


def measure_import(*, images: int = IMAGES, sizes: tuple[int, ...] = SIZES, cache: Path = CACHE) -> dict[str, Any]:
    source = photo_folder(images, cache=cache)
    source_mib = sum(p.stat().st_size for p in source.rglob("*.jpg")) / 2**20
    runs = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="onebox-bench-import-") as home:
            command = [sys.executable, "-m", "benchmarks.dataset_import", "--child", str(source), home, str(size)]
            done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
            run = {"size": size, "resize": "crop", **json.loads(done.stdout.strip().splitlines()[-1])}
        print(
            f"import of {images:,} photos at {size}x{size}: {run['images_per_s']:,} images/s "
            f"({run['total_s']} s), peak RSS {run['peak_rss_mib']:,} MiB",
            flush=True,
        )
        runs.append(run)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "images": images,
        "source_mib": round(source_mib, 1),
        "runs": runs,
    }


def import_targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The target rows for the summary: peak RSS under 1 GB for each measured import."""
    rows: list[tuple[str, str, bool | None]] = []
    for run in results["runs"]:
        label = f"`data import` of {results['images']:,} photos at {run['size']}x{run['size']}: peak RSS < 1 GB"
        rows.append((label, f"{run['peak_rss_mib']:,.0f} MiB", run["peak_rss_mib"] < RSS_TARGET_MIB))
    return rows


def import_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"`onebox data import` of {results['images']:,} RGB JPEGs, 192-320 px a side "
        f"({results['source_mib']:,.0f} MiB), centre-cropped; a process of its own in a fresh home:",
        "",
        "| resolution | images/s | scan (read, hash, header) | convert (decode, store, copy) | peak RSS | store |",
        "|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        lines.append(
            f"| {run['size']}x{run['size']} | {run['images_per_s']:,} | {run['scan_s']} s | {run['convert_s']} s | "
            f"{run['peak_rss_mib']:,.0f} MiB | {run['store_mib']:,.0f} MiB |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description="Import benchmark (benchmarks/dataset_import.py).")
    parser.add_argument("--images", type=int, default=IMAGES, help="Photos in the generated folder.")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="Training resolutions.")
    parser.add_argument("--child", nargs=3, metavar=("SOURCE", "HOME", "SIZE"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        source, home, size = options.child
        _child(Path(source), Path(home), int(size))
        return 0
    from benchmarks import report, suite

    suite.write("dataset_import", measure_import(images=options.images, sizes=tuple(options.sizes)))
    report.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
