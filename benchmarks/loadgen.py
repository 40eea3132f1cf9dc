"""HTTP load on loopback, bounded in time: wrk (Debian's package), or a plain Python client.

Every server in a comparison gets the same generator, the same request body and the same
number of connections. wrk is installed with apt-get when it is missing and this runs as root
on a Debian-like machine; otherwise the Python client runs, and the results say so.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from serving.uploads import Upload

# One request's body, the same bytes for every request of a run: bytes and their content type,
# the shape the server's own upload parser gives back.
Body = Upload


@dataclass(frozen=True)
class LoadResult:
    connections: int
    seconds: float
    requests: int
    errors: int  # non-2xx answers, connection errors and timeouts
    rps: float
    p50_ms: float
    p99_ms: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def ensure_wrk() -> str | None:
    """The path of wrk, installing Debian's package when possible; None: use the Python client."""
    found = shutil.which("wrk")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("wrk is missing: installing it from Debian's packages (apt-get install wrk)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "wrk"]):
            subprocess.run(command, capture_output=True, check=False, env=env, timeout=300)
        if shutil.which("wrk"):
            return shutil.which("wrk")
    print("wrk is not available (install it: apt-get install wrk); using the Python load client, which is slower")
    return None


def describe(wrk: str | None) -> str:
    if wrk is None:
        return "python http.client threads (fallback; wrk missing)"
    version = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
    return (version.stdout + version.stderr).split("Copyright")[0].strip() or "wrk"


def _milliseconds(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(wrk: str, url: str, body: Body, *, connections: int, seconds: float) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="onebox-wrk-") as folder:
        payload = Path(folder) / "body"
        payload.write_bytes(body.data)
        script = Path(folder) / "post.lua"
        script.write_text(
            f'local f = io.open("{payload}", "rb"); wrk.body = f:read("*all"); f:close()\n'
            f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "{body.content_type}"\n'
        )
        threads = str(min(2, connections))
        duration = f"{max(1, round(seconds))}s"  # wrk takes whole seconds ("2.0s" is refused)
        command = [wrk, "-t", threads, "-c", str(connections), "-d", duration, "--timeout", "10s", "--latency"]
        done = subprocess.run(
            [*command, "-s", str(script), url], capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    if done.returncode != 0 or "requests in" not in done.stdout:
        raise RuntimeError(f"wrk failed against {url}: {done.stdout[-500:]} {done.stderr[-500:]}")
    return parse_wrk(done.stdout, connections=connections, seconds=seconds)


def parse_wrk(out: str, *, connections: int, seconds: float) -> LoadResult:
    """The figures of wrk's --latency report; errors are socket errors plus non-2xx answers."""
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return LoadResult(
        connections=connections,
        seconds=seconds,
        requests=requests,
        errors=errors,
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=_milliseconds(re.search(r"\s50%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        p99_ms=_milliseconds(re.search(r"\s99%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
    )


def run_python(url: str, body: Body, *, connections: int, seconds: float) -> LoadResult:
    """The fallback: one keep-alive connection per thread, as many threads as connections."""
    parts = urlsplit(url)
    deadline = time.monotonic() + seconds
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client() -> None:
        mine: list[float] = []
        connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                connection.request("POST", parts.path, body.data, {"Content-Type": body.content_type})
                answer = connection.getresponse()
                answer.read()
                if answer.status != 200:
                    with lock:
                        errors[0] += 1
                if answer.getheader("connection", "").lower() == "close":
                    connection.close()
            except (OSError, http.client.HTTPException):
                with lock:
                    errors[0] += 1
                connection.close()
            mine.append((time.perf_counter() - started) * 1000)
        connection.close()
        with lock:
            latencies.extend(mine)

    started = time.monotonic()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    elapsed = time.monotonic() - started
    latencies.sort()
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return LoadResult(
        connections=connections,
        seconds=seconds,
        requests=len(latencies),
        errors=errors[0],
        rps=len(latencies) / elapsed,
        p50_ms=cuts[49],
        p99_ms=cuts[98],
    )


def run_load(wrk: str | None, url: str, body: Body, *, connections: int, seconds: float) -> LoadResult:
    if wrk is None:
        return run_python(url, body, connections=connections, seconds=seconds)
    return run_wrk(wrk, url, body, connections=connections, seconds=seconds)
