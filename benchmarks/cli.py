"""How fast the ``onebox`` command answers, as a new user runs it on the embedded (local) runtime.

Each quick command (``--help``, ``status``, ``data list``, an argument error, an unknown run or
dataset) runs as its own process in a fresh home, several times; the median counts. Then
``onebox train --epochs 1`` on the bundled digits, timed from the start of the process to the
moment the new model answers ``/readyz`` (and to the command's end): cold (a fresh home, so the
local Prefect server starts too) and warm (the same home, that server already up, the model
server stopped first so "served" means the new one). No Docker is involved.

``python -m benchmarks.cli`` writes benchmarks/results/cli.json and refreshes the summary;
``--source DIR`` runs another checkout (an older commit, for a before/after) and
``--no-bytecode`` ignores the compiled bytecode, as a venv installed without it runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.servers import free_port
from serving.checkout import SOURCE_ROOT

QUICK_TARGET_S = 1.0
TRAIN_TARGET_S = 25.0
QUICK_COMMANDS: dict[str, tuple[tuple[str, ...], float | None]] = {
    "--help": (("--help",), QUICK_TARGET_S),
    "status": (("status",), QUICK_TARGET_S),
    "models": (("models",), QUICK_TARGET_S),
    "data list": (("data", "list"), QUICK_TARGET_S),
    "train --epochs 0 (an argument error)": (("train", "--epochs", "0"), QUICK_TARGET_S),
    "report nosuchrun": (("report", "nosuchrun"), None),
    "train --dataset nope": (("train", "--dataset", "nope"), None),
}


class Onebox:
    """Runs ``onebox`` (as ``python -m flows``) from ``source`` in one home with ports of its own."""

    def __init__(self, source: Path, home: Path, *, bytecode: bool) -> None:
        self.source = source
        self.serve_url = f"http://127.0.0.1:{free_port()}"
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("ONEBOX_", "PREFECT_", "MLFLOW_"))}
        self.env = {
            **inherited,
            "ONEBOX_HOME": str(home),
            "ONEBOX_RUNTIME": "local",
            "ONEBOX_SERVE_PORT": self.serve_url.rsplit(":", 1)[1],
            "ONEBOX_LOCAL_PREFECT_PORT": str(free_port()),
        }
        if not bytecode:
            # Bytecode is then looked for (and not written) in an empty folder: compiled anew each run.
            self.env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="onebox-bench-nopyc-")
            self.env["PYTHONDONTWRITEBYTECODE"] = "1"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "flows", *args]

    def run(self, *args: str, timeout_s: float = 600) -> float:
        started = time.perf_counter()
        subprocess.run(
            self.command(*args), cwd=self.source, env=self.env, capture_output=True, timeout=timeout_s, check=False
        )
        return time.perf_counter() - started

    def train_to_served(self) -> tuple[float, float]:
        """Seconds from the start of ``onebox train --epochs 1`` to the model answering, and to the command's end."""
        started = time.perf_counter()
        args = ("train", "--epochs", "1", "--min-improvement", "-1")  # always promoted, so always served anew
        with tempfile.TemporaryFile() as output:
            process = subprocess.Popen(
                self.command(*args), cwd=self.source, env=self.env, stdout=output, stderr=subprocess.STDOUT
            )
            served = None
            while process.poll() is None:
                if served is None and _ready(self.serve_url):
                    served = time.perf_counter() - started
                time.sleep(0.1)
            ended = time.perf_counter() - started
            if process.returncode != 0:
                output.seek(0)
                raise RuntimeError(f"onebox train failed:\n{output.read().decode(errors='replace')[-3000:]}")
        return served if served is not None else ended, ended

    def stop_model_server(self) -> None:
        """Stop only the model server: a warm run keeps the Prefect server."""
        script = "from serving.local import LocalRuntime; from storage.settings import get_settings; "
        script += "LocalRuntime(get_settings()).stop()"
        subprocess.run([sys.executable, "-c", script], cwd=self.source, env=self.env, check=True, timeout=120)

    def stop_all(self) -> None:
        subprocess.run(self.command("stop"), cwd=self.source, env=self.env, capture_output=True, check=False)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


def _load() -> float:
    return os.getloadavg()[0]


def measure_cli(
    *, source: Path = SOURCE_ROOT, bytecode: bool = True, rounds: int = 5, train_rounds: int = 3
) -> dict[str, Any]:
    """The quick commands' and the training run's times; see the module docstring."""
    quick: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="onebox-bench-cli-") as folder:
        onebox = Onebox(source, Path(folder) / "home", bytecode=bytecode)
        for name, (args, target) in QUICK_COMMANDS.items():
            load = _load()
            runs = [round(onebox.run(*args), 3) for _ in range(rounds)]
            median = round(statistics.median(runs), 2)
            quick.append({"command": f"onebox {name}", "runs_s": runs, "median_s": median, "target_s": target,
                          "load_1min": round(load, 2)})  # fmt: skip
            print(f"onebox {name}: {median} s (load {load:.2f})")
    train: dict[str, Any] = {"target_s": TRAIN_TARGET_S}
    cold: list[tuple[float, float, float]] = []
    warm: list[tuple[float, float, float]] = []
    for _ in range(train_rounds):
        with tempfile.TemporaryDirectory(prefix="onebox-bench-train-") as folder:
            onebox = Onebox(source, Path(folder) / "home", bytecode=bytecode)
            try:
                load = _load()
                cold.append((*onebox.train_to_served(), load))
                onebox.stop_model_server()
                load = _load()
                warm.append((*onebox.train_to_served(), load))
            finally:
                onebox.stop_all()
        print(f"train --epochs 1: cold {cold[-1][0]:.1f} s to served, warm {warm[-1][0]:.1f} s")
    for label, trials in (("cold", cold), ("warm", warm)):
        train[label] = {
            "served_s": [round(r[0], 2) for r in trials],
            "command_s": [round(r[1], 2) for r in trials],
            "load_1min": [round(r[2], 2) for r in trials],
            "median_served_s": round(statistics.median(r[0] for r in trials), 1),
            "median_command_s": round(statistics.median(r[1] for r in trials), 1),
        }
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "source": str(source),
        "bytecode": bytecode,
        "rounds": rounds,
        "commands": quick,
        "train": train,
    }


def cli_targets(cli: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """The summary's target rows for the command: (target, measured, met)."""
    rows = [
        (f"`{command['command']}` < {command['target_s']:g} s", f"{command['median_s']} s",
         command["median_s"] < command["target_s"])
        for command in cli["commands"]
        if command["target_s"] is not None
    ]  # fmt: skip
    train = cli["train"]
    for label in ("cold", "warm"):
        served = train[label]["median_served_s"]
        rows.append((f"embedded `onebox train --epochs 1`, Enter to served < {train['target_s']:g} s ({label})",
                     f"{served} s", served < train["target_s"]))  # fmt: skip
    return rows


def cli_table(cli: dict[str, Any], before: dict[str, Any] | None) -> list[str]:
    def loads(values: list[float]) -> str:
        return f"{min(values):.1f}-{max(values):.1f}"

    was = {c["command"]: c for c in before["commands"]} if before else {}
    head = f"before ({before['date'][:10]}, {'with' if before['bytecode'] else 'no'} bytecode) | " if before else ""
    lines = [
        "",
        f"The `onebox` command on the embedded runtime ({cli['date'][:10]}), each a new process in a fresh home; "
        f"median of {cli['rounds']} runs, seconds (machine load, 1-minute average, beside each):",
        "",
        f"| command | {head}now |",
        "|---|---|" + ("---|" if before else ""),
    ]
    for command in cli["commands"]:
        old = was.get(command["command"])
        cell = f"{old['median_s']} (load {old['load_1min']}) | " if old else ("- | " if before else "")
        lines.append(f"| `{command['command']}` | {cell}{command['median_s']} (load {command['load_1min']}) |")
    for label, what in (("cold", "fresh home: digits imported, Prefect server started"), ("warm", "server up")):
        now = cli["train"][label]
        old = before["train"][label] if before else None
        cell = ""
        if old:
            cell = f"{old['median_served_s']} / {old['median_command_s']} (load {loads(old['load_1min'])}) | "
        lines.append(
            f"| `train --epochs 1` to served / to the command's end, {label} ({what}) | {cell}"
            f"{now['median_served_s']} / {now['median_command_s']} (load {loads(now['load_1min'])}) |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description="How fast the onebox command answers (benchmarks/cli.py).")
    parser.add_argument("--source", type=Path, default=SOURCE_ROOT, help="Checkout to run (default: this one).")
    parser.add_argument("--no-bytecode", action="store_true", help="Ignore compiled bytecode (a venv without it).")
    parser.add_argument("--rounds", type=int, default=5, help="Runs of each quick command.")
    parser.add_argument("--train-rounds", type=int, default=3, help="Cold + warm training runs.")
    parser.add_argument("--name", default="cli", help="Result name: benchmarks/results/NAME.json.")
    options = parser.parse_args()
    from benchmarks import report, suite

    results = measure_cli(
        source=options.source.resolve(),
        bytecode=not options.no_bytecode,
        rounds=options.rounds,
        train_rounds=options.train_rounds,
    )
    suite.write(options.name, results)
    if options.name == "cli":
        report.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
