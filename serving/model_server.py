"""A model server: the BentoML service's ASGI app under uvicorn, with ONEBOX_SERVE_WORKERS worker
processes, listening on the container's port and on a Unix socket the gateway reaches it by.

``bentoml serve`` runs its own supervisor beside its workers; with one worker that supervisor
cost about 110 MB of the 190 MB an idle model container took, and every served model costs its
memory all the time. Here one worker is one process; more are uvicorn's worker processes, under a
parent of about 20 MB that restarts one that dies. The app is the one ``bentoml serve``'s workers
run (the service's routes and middlewares, ``/readyz`` once the model is loaded), so the gateway
and the health checks see no difference. A model that fails to load ends the process, and its
container's restart says so.

The socket (``ONEBOX_SERVE_SOCKET``, a file on a volume the gateway shares): nginx reached the
model over TCP through Docker's bridge before, and that hop cost nginx more CPU per request than
all its own work (benchmarks/serving.py; figures in README). The port stays for the container's
health check, the smoke test inside it and anyone on the appliance's network.

Run it with ``ONEBOX_MODEL_DIR=/path/to/bundle python3 -m serving.model_server``.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

from serving.metadata import WORKERS_VARIABLE

PORT_VARIABLE = "ONEBOX_SERVE_CONTAINER_PORT"  # 3000 in the model images
SOCKET_VARIABLE = "ONEBOX_SERVE_SOCKET"  # unset: the port alone


def create_app() -> Any:
    """The service's ASGI app (uvicorn calls this in each worker process)."""
    from serving.service import Classifier

    return Classifier.to_asgi()  # type: ignore[attr-defined]  # bentoml's decorators are untyped


def unix_socket(path: Path) -> socket.socket:
    """A listening socket at ``path``, which the gateway (another user) may connect to; a socket
    left there by a container that was killed is replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if stat.S_ISSOCK(path.lstat().st_mode):
            path.unlink()
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o666)  # connecting takes write permission on the socket
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener


def main() -> None:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    workers = int(os.environ.get(WORKERS_VARIABLE, "1"))
    # No access log, as the service's own setting (ONEBOX_SERVE_ACCESS_LOG) leaves it by default;
    # keep-alive 5 s: the gateway closes its pooled connections at 4 s, before the server does.
    config = uvicorn.Config(
        "serving.model_server:create_app",
        factory=True,
        host="0.0.0.0",  # the container's own address
        port=int(os.environ.get(PORT_VARIABLE, "3000")),
        workers=workers,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=5,
        backlog=2048,
    )
    sockets = [config.bind_socket()]
    if os.environ.get(SOCKET_VARIABLE):
        sockets.append(unix_socket(Path(os.environ[SOCKET_VARIABLE])))
    if workers > 1:
        Multiprocess(config, sockets=sockets).run()
    else:
        uvicorn.Server(config).run(sockets=sockets)


if __name__ == "__main__":
    main()
