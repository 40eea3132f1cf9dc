"""A bounded, steady-rate prediction load for checking swaps: who answered, what failed.

Used by the docker tests and the appliance benchmark against a gateway on loopback.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from serving.health import blank_png
from serving.waiting import NotYet, WaitTimeout, wait_for
from storage.credentials import api_key_headers


@dataclass
class SteadyLoad:
    """``clients`` threads, each posting /predict ``rate_per_client`` times a second until stopped."""

    url: str
    image_shape: tuple[int, int, int] = (1, 8, 8)
    rate_per_client: float = 40.0
    clients: int = 3
    max_seconds: float = 600.0  # a hard bound, whatever the caller does
    api_key: str | None = None  # what the gateway asks for once credentials are set
    answers: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def _client(self) -> None:
        image = blank_png(self.image_shape)
        started = time.monotonic()
        with httpx.Client(timeout=30, headers=api_key_headers(self.api_key)) as client:
            next_at = time.monotonic()
            while not self.stop.is_set() and time.monotonic() - started < self.max_seconds:
                try:
                    answer = client.post(f"{self.url}/predict", files={"image": ("load.png", image, "image/png")})
                    if answer.status_code == 200:
                        self.answers[str(answer.json()["model_version"])] += 1
                    else:
                        self.failures.append(f"{answer.status_code}: {answer.text[:200]}")
                except httpx.HTTPError as error:
                    self.failures.append(repr(error))
                next_at += 1 / self.rate_per_client
                time.sleep(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> SteadyLoad:
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for thread in self.threads:
            thread.start()
        return self

    def finish(self, *, at_least: int, timeout_s: float = 120) -> None:
        """Keep going until ``at_least`` requests were sent (or the timeout), then stop."""

        def enough_sent() -> None:
            if self.sent < at_least:
                raise NotYet(f"{self.sent} of {at_least} requests sent")

        with contextlib.suppress(WaitTimeout):  # the load ends either way; the caller reads what was sent
            wait_for(enough_sent, timeout_s=timeout_s, what=f"{at_least} requests", interval_s=0.2)
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()

    @property
    def sent(self) -> int:
        return sum(self.answers.values()) + len(self.failures)
