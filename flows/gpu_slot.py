"""The `gpu` slot a training holds: one training per GPU, and never a slot left held by a dead one.

Prefect's ``concurrency()`` takes the slot with a 300 s lease and waits for it in a background
service: a SIGKILLed holder kept the slot until the lease expired (minutes), and Ctrl-C did not
end a wait. Here the lease is taken with Prefect's client directly:

- its id goes into the training's locked record (``flows/live_runs.py``), so the next training
  releases a dead holder's slot the moment it looks, without waiting for any expiry;
- it lasts 60 s (the server's minimum) and a thread renews it every 15 s, so a holder the record
  cannot vouch for (killed in the instant between the grant and the record, or on a machine that
  does not share this home) loses it to the server's own expiry within about a minute;
- the wait is a loop in this thread: it says who holds the slot, settles holders that die while
  it waits, and Ctrl-C ends it at once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from uuid import UUID

from flows import abandoned, live_runs
from flows.deployments import GPU_LIMIT, ensure_gpu_limit
from storage.errors import OneboxError
from storage.settings import Settings

LEASE_S = 60.0  # the shortest lease Prefect's server grants
RENEW_EVERY_S = 15.0  # three renewals may fail before the lease lapses
POLL_S = 1.0  # between attempts while the slot is taken: a freed slot is taken within about a second
LOCKED = 423  # Prefect's answer when every slot is taken


class SlotWaitInterruptedError(OneboxError):
    """Ctrl-C while the training waited for a `gpu` slot: nothing was trained."""


@contextlib.contextmanager
def hold_gpu_slot(settings: Settings, live: live_runs.LiveTraining, *, say: Callable[[str], None]) -> Iterator[None]:
    """Hold one slot of the `gpu` limit for the block, waiting for it first.

    Args:
        live: this training's record; the lease is written into it while held.
        say: where the waiting and holding messages go (the run's log).

    Raises:
        SlotWaitInterruptedError: Ctrl-C (SIGINT) while waiting; no slot was taken.
    """
    ensure_gpu_limit()
    try:
        lease_id = _acquire(settings, live, say=say)
    except KeyboardInterrupt:
        message = f"interrupted (Ctrl-C) while waiting for a {GPU_LIMIT!r} slot; nothing was trained"
        raise SlotWaitInterruptedError(message) from None
    live.update(lease_id=str(lease_id))
    say(f"holding a {GPU_LIMIT!r} slot: training")
    stop = threading.Event()
    renewer = threading.Thread(target=_renew, args=(lease_id, stop, say), daemon=True, name="gpu-lease-renewal")
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join(timeout=5)
        _release(lease_id, say=say)
        live.update(lease_id=None)
        say(f"released the {GPU_LIMIT!r} slot")


def _acquire(settings: Settings, live: live_runs.LiveTraining, *, say: Callable[[str], None]) -> UUID:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.exceptions import PrefectHTTPStatusError

    holder = None
    if not live.record.flow_run_id.startswith("no-flow-run-"):
        holder = ConcurrencyLeaseHolder(type="flow_run", id=UUID(live.record.flow_run_id))
    told = None
    with get_client(sync_client=True) as client:
        while True:
            for dead in abandoned.recover_killed_trainings(settings):
                say(f"{dead.describe()} died without ending: its slot and runs are released and marked crashed")
            try:
                response = client.increment_concurrency_slots_with_lease(
                    names=[GPU_LIMIT], slots=1, mode="concurrency", lease_duration=LEASE_S, holder=holder
                )
                return UUID(response.json()["lease_id"])
            except PrefectHTTPStatusError as error:
                if error.response.status_code != LOCKED:
                    raise
            holders = "; ".join(record.describe() for record in live_runs.held_by_others(settings))
            if holders != told:  # said once, and again when who holds it changes
                held = f"held by {holders}" if holders else "held by a training not recorded in this home"
                say(f"waiting for a slot of the {GPU_LIMIT!r} concurrency limit ({held})")
                told = holders
            time.sleep(POLL_S)


def _renew(lease_id: UUID, stop: threading.Event, say: Callable[[str], None]) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        while not stop.wait(RENEW_EVERY_S):
            try:
                client.renew_concurrency_lease(lease_id=lease_id, lease_duration=LEASE_S)
            except Exception as error:  # a server restarting: the next renewal may still make it
                say(f"could not renew the {GPU_LIMIT!r} lease ({type(error).__name__}: {error}); training goes on")


def _release(lease_id: UUID, *, say: Callable[[str], None]) -> None:
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            client.release_concurrency_slots_with_lease(lease_id)
    except Exception as error:  # the slot still frees itself when the lease expires
        say(f"could not release the {GPU_LIMIT!r} slot ({error}); it frees itself within {LEASE_S:.0f} s")
