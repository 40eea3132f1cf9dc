"""The one way onebox waits for something: poll a check until it passes or a deadline passes.

Servers starting, containers turning healthy, a gateway switching over, a process group
exiting: each is a check that says why it is not done yet, so a timeout names what was last seen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from storage.errors import ServingError

T = TypeVar("T")


class NotYet(Exception):  # noqa: N818 -- a signal from a check, not an error
    """Raised by a check that has not passed yet; its message is what the check saw."""


class WaitTimeout(ServingError):  # noqa: N818 -- reads as what happened
    """What was waited for did not happen in time."""


def wait_for(
    check: Callable[[], T],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.25,
    error: type[ServingError] = WaitTimeout,
) -> T:
    """Call ``check`` every ``interval_s`` until it returns instead of raising :class:`NotYet`.

    Any other exception from ``check`` ends the wait at once (a server that died will not start).

    Args:
        what: what is awaited, for the message: "the model server at URL to be ready".
        error: the exception type raised on timeout.

    Returns:
        What ``check`` returned.

    Raises:
        WaitTimeout (or ``error``): ``check`` had not passed after ``timeout_s``; the message
            ends with what it last saw.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except NotYet as pending:
            last = str(pending) or "not yet"
        if time.monotonic() >= deadline:
            raise error(f"waited {timeout_s:g} s for {what} ({last})")
        time.sleep(interval_s)
