"""The model server a color runs (serving/model_server.py), as its container runs it: the service's
app under uvicorn, answering on its port and on its Unix socket, with two workers under a parent
that replaces one killed with SIGKILL; a socket left by a killed server does not stop a new one."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from benchmarks.servers import free_port
from serving.log_settings import LOG_DIR_VARIABLE
from serving.metadata import MODEL_DIR_VARIABLE, WORKERS_VARIABLE
from serving.model_server import PORT_VARIABLE, SOCKET_VARIABLE
from serving.waiting import NotYet, wait_for
from tests.conftest import png_bytes
from tests.serving.conftest import DIGITS_SHAPE, digits_bundle, lit_pixel

pytestmark = pytest.mark.slow


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    socket: Path

    def over_socket(self) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://model", timeout=10)

    def workers(self) -> set[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return {int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("model-server")
    path = folder / "sockets" / "model_0_blue.sock"
    path.parent.mkdir()
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a killed server's socket, still a file
    left.bind(str(path))
    left.close()
    port = free_port()
    env = {
        **os.environ,
        MODEL_DIR_VARIABLE: str(digits_bundle(folder / "digits")),
        WORKERS_VARIABLE: "2",
        PORT_VARIABLE: str(port),
        SOCKET_VARIABLE: str(path),
        LOG_DIR_VARIABLE: str(folder / "log"),
    }
    process = subprocess.Popen([sys.executable, "-m", "serving.model_server"], env=env, cwd=Path(__file__).parents[2])
    started = Server(process, port, path)

    def ready() -> None:
        if process.poll() is not None:
            raise RuntimeError(f"the model server exited with {process.returncode}")
        try:
            with started.over_socket() as client:
                client.get("/readyz").raise_for_status()
        except httpx.HTTPError as error:
            raise NotYet(str(error)) from error

    try:
        wait_for(ready, timeout_s=90, what="the model server to answer on its socket")
        yield started
    finally:
        process.terminate()
        process.wait(timeout=30)


def predict(client: httpx.Client, index: int) -> str:
    files = {"image": ("digit.png", png_bytes(lit_pixel(DIGITS_SHAPE, index)), "image/png")}
    answer = client.post("/predict", files=files)
    assert answer.status_code == 200, answer.text
    label: str = answer.json()["label"]
    return label


def test_it_answers_on_its_socket_and_its_port(server: Server) -> None:
    with server.over_socket() as client:
        assert predict(client, 3) == "3"
        assert client.get("/metadata").json()["model_name"] == "digits"
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
        assert predict(client, 4) == "4"
    # The gateway's nginx runs as another user: connecting takes write permission on the socket.
    assert stat.S_IMODE(server.socket.stat().st_mode) == 0o666


def test_a_worker_killed_is_replaced_and_the_socket_keeps_answering(server: Server) -> None:
    workers = wait_for(lambda: _two(server), timeout_s=30, what="two workers")
    os.kill(min(workers), signal.SIGKILL)

    def replaced() -> set[int]:
        now = _two(server)
        if min(workers) in now:
            raise NotYet("the killed worker is still listed")
        return now

    wait_for(replaced, timeout_s=60, what="the killed worker's replacement")
    with server.over_socket() as client:
        assert [predict(client, k) for k in range(10)] == [str(k) for k in range(10)]


def _two(server: Server) -> set[int]:
    workers = server.workers()
    if len(workers) != 2:
        raise NotYet(f"{len(workers)} workers")
    return workers


def test_a_stop_ends_the_workers_with_the_parent(server: Server) -> None:
    workers = _two(server)
    server.process.terminate()
    assert server.process.wait(timeout=30) == 0
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
