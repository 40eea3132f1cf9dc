"""A model server in one process: the BentoML service's ASGI app under uvicorn, for a model served
with one worker (in the appliance, every model but the default one).

``bentoml serve`` runs a supervisor process beside its workers; with one worker that supervisor
cost about 110 MB of the 190 MB an idle model container took, and every served model costs its
memory all the time. The app is the same one the workers run (the service's routes and
middlewares, ``/readyz`` once the model is loaded), so the gateway and the health checks see no
difference. A model that fails to load ends the process, and its container's restart says so.

Run it with ``ONEBOX_MODEL_DIR=/path/to/bundle python3 -m serving.single_process``.
"""

from __future__ import annotations

import os

PORT_VARIABLE = "ONEBOX_SINGLE_PROCESS_PORT"  # 3000 in the model images


def main() -> None:
    import uvicorn

    from serving.service import Classifier

    app = Classifier.to_asgi()  # type: ignore[attr-defined]  # bentoml's decorators are untyped
    # No access log, as the service's own setting (ONEBOX_SERVE_ACCESS_LOG) leaves it by default;
    # keep-alive 5 s: the gateway closes its pooled connections at 4 s, before the server does.
    uvicorn.run(
        app,
        host="0.0.0.0",  # the container's own address: the gateway reaches it there
        port=int(os.environ.get(PORT_VARIABLE, "3000")),
        log_level="warning",
        access_log=False,
        timeout_keep_alive=5,
    )


if __name__ == "__main__":
    main()
