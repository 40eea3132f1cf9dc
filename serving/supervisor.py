"""The appliance's supervisor: a served model's live color that stopped is started again.

Docker's restart policy brings back a container whose process crashed, but not one stopped
through Docker itself (`docker kill`, `docker stop`, an engine that killed it: Docker counts all
of them as a stop it must respect), and then every request to that model failed until someone
ran `onebox up`. The appliance's `supervisor` service (docker-compose.yml) checks every second:
each live color that the state (serving/appliance_state.py) names and that is not running is
started again, with a growing pause between tries of one that keeps stopping (up to a minute).

It holds the state's lock while it looks and starts, so it never races a deploy, a stop, an
`up` or a `down` (each holds the lock while it starts or removes colors): what one of them stopped
on purpose is no longer live in the state once the lock is free. To stop serving a model, use
`onebox stop NAME`; a live color stopped by hand comes back.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from serving.appliance_state import read_state, state_lock_if_free, state_path
from serving.docker_client import project_container
from storage.errors import ServingError
from storage.settings import Settings, get_settings

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger("onebox.supervisor")

CHECK_INTERVAL_S = 1.0
MAX_PAUSE_S = 60.0
HEARTBEAT_FILE = Path("/tmp/onebox-supervisor.alive")  # its healthcheck reads the file's age


@dataclass
class Supervisor:
    settings: Settings
    clock: Callable[[], float] = time.monotonic
    # Per service: when it may be tried again, and the pause after the next failure.
    _next_try: dict[str, float] = field(default_factory=dict)
    _pause: dict[str, float] = field(default_factory=dict)

    def check(self) -> list[str]:
        """Start each live color that is not running; returns the services started."""
        started: list[str] = []
        path = state_path(self.settings)
        with state_lock_if_free(path) as free:
            # Busy: a deploy, stop, `up` or `down` is changing the colors; look again next time.
            state = read_state(path) if free else None
            for model in state.live_models() if state else ():
                assert model.live_color is not None
                service = model.service(model.live_color)
                container = project_container(self.settings.compose_project, service)
                if container is None or container.status in ("running", "restarting", "created", "removing"):
                    continue  # gone entirely (`onebox up` recreates it), or Docker is at it already
                now = self.clock()
                if now < self._next_try.get(service, 0.0):
                    continue
                pause = self._pause.get(service, 1.0)
                self._next_try[service], self._pause[service] = now + pause, min(MAX_PAUSE_S, 2 * pause)
                try:
                    container.start()
                except Exception as error:  # the engine refused: said, and tried again after the pause
                    log.warning("could not start %s (model %s): %s", service, model.name, error)
                    continue
                log.warning("%s (the live color of model %s) had stopped: started again", service, model.name)
                started.append(service)
        self._forget_healthy(started)
        return started

    def _forget_healthy(self, started: list[str]) -> None:
        """A service that has run a minute since its last start gets its short pause back."""
        now = self.clock()
        for service, next_try in list(self._next_try.items()):
            if service not in started and now - next_try > MAX_PAUSE_S:
                del self._next_try[service]
                self._pause.pop(service, None)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s supervisor %(levelname)s %(message)s")
    supervisor = Supervisor(get_settings())
    log.info("watching the live colors of %s", supervisor.settings.compose_project)
    last_problem = ""
    while True:
        try:
            supervisor.check()
            HEARTBEAT_FILE.touch()  # healthy while it reaches the engine (the state's lock busy or not)
            last_problem = ""
        except ServingError as error:  # the engine is restarting, or the socket is not ours: again
            if str(error) != last_problem:  # once, not each second
                log.warning("%s", error)
            last_problem = str(error)
        time.sleep(CHECK_INTERVAL_S)


if __name__ == "__main__":
    main()
