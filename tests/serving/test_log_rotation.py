"""The local server's log rotation, with a real child process: bounded files, no line lost or split,
the last lines kept when the group is stopped, the child's exit status passed on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from serving.log_rotation import RotatingLog
from serving.processes import start_process_group, stop_process_group


def test_a_log_past_its_size_is_rotated_keeping_whole_lines(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "server.log", max_bytes=1000, keep=2)
    for number in range(300):
        log.write(f"line {number:04d} ".encode() + b"x" * 20 + b"\n")
    log.close()
    files = [tmp_path / "server.log", tmp_path / "server.log.1", tmp_path / "server.log.2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in files]
    assert all(path.stat().st_size <= 1000 for path in files)
    kept = [line for path in reversed(files) for line in path.read_text().splitlines()]
    numbers = [int(line.split()[1]) for line in kept]
    assert numbers == list(range(numbers[0], 300))  # the newest lines, in order, none split
    assert all(line.endswith("x" * 20) for line in kept)


def test_the_server_output_goes_through_and_its_last_lines_survive_a_stop(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    server = (
        "import signal, sys, time\n"
        "def stop(*_):\n    print('stopped cleanly', flush=True); sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('ready', flush=True)\n"
        "while True:\n    time.sleep(0.05)\n"
    )
    command = [sys.executable, "-m", "serving.log_rotation", str(log), "--", sys.executable, "-c", server]
    process = start_process_group(command, env={}, log_path=tmp_path / "rotation.log")
    from serving.waiting import NotYet, wait_for

    def ready() -> None:
        if not log.exists() or "ready" not in log.read_text():
            raise NotYet("no output yet")

    wait_for(ready, timeout_s=30, what="the server's first line")
    stop_process_group(process.pid)
    assert log.read_text().splitlines() == ["ready", "stopped cleanly"]


def test_it_exits_with_the_servers_status(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; print('failing'); sys.exit(3)"]
    result = subprocess.run([sys.executable, "-m", "serving.log_rotation", str(tmp_path / "x.log"), "--", *command])
    assert result.returncode == 3
    assert (tmp_path / "x.log").read_text() == "failing\n"


def test_without_a_command_it_says_how_to_call_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "serving.log_rotation", str(tmp_path / "x.log")], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "usage: python -m serving.log_rotation LOG -- COMMAND" in result.stderr
