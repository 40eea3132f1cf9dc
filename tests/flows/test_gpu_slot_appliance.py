"""The `gpu` slot on the appliance's Prefect server (its container, leases on its volume): a killed training.

One appliance for the module. `onebox train` runs in this host's process (no worker polls), as
a researcher's terminal run does, recorded by the stack's Prefect and MLflow servers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from serving.compose import ComposeRuntime
from serving.health import wait_until_ready
from storage.settings import Settings
from tests.conftest import isolated_appliance
from tests.flows.generated import generated_dataset
from tests.flows.test_gpu_slot import (
    HOLDING,
    LONG,
    RECOVERED,
    SHORT,
    WAITING,
    _no_training_outlives_its_test,  # noqa: F401  (autouse: a failed test leaves no training running)
    active_slots,
    assert_settled,
    expire_a_dead_holders_lease,
    record_of,
    train,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1800)]  # the stack's start counts too


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    with isolated_appliance(tmp_path_factory) as settings:
        ComposeRuntime(settings).up(timeout_s=900)  # a busy machine: the stack took over 300 s here
        generated_dataset(settings, tmp_path_factory.mktemp("squares"), classes=3, per_class=14, side=8)
        yield settings


def test_a_training_killed_mid_epoch_frees_the_appliance_slot_and_the_next_starts_at_once(appliance: Settings) -> None:
    first = train(appliance, *LONG)
    first.wait_line("epoch 2/")
    assert HOLDING in first.output
    record = record_of(appliance, first)
    first.kill()

    second = train(appliance, *SHORT)
    assert second.finish() == 0, second.output[-4000:]
    assert RECOVERED in second.output
    assert WAITING not in second.output
    assert_settled(appliance, record)
    assert active_slots(appliance) == 0


def test_the_appliance_server_expires_a_dead_holders_lease_across_its_restart(appliance: Settings) -> None:
    assert appliance.prefect_api_url is not None

    def restart() -> None:
        ComposeRuntime(appliance).compose("restart", "prefect")
        wait_until_ready(
            f"http://127.0.0.1:{appliance.prefect_port}", timeout_s=180, health_path="/api/health", server="Prefect"
        )

    expired_s = expire_a_dead_holders_lease(appliance, appliance.prefect_api_url, restart=restart)
    print(f"the appliance's server expired a dead holder's lease {expired_s:.1f} s after the kill (restarted)")
