"""The prediction log's settings as the servers read them, where the appliance's colors write it,
and what the writer keeps on disk (real files, no server)."""

from __future__ import annotations

import ipaddress
import os
import re
import time
from dataclasses import fields
from pathlib import Path

import pytest

from serving.appliance_network import ApplianceNetwork
from serving.appliance_state import ApplianceState, ServedModel
from serving.checkout import COMPOSE_DIR
from serving.compose_models import (
    CONTAINER_LOG_DIR,
    MODEL_IMAGE_UID,
    log_user,
    models_compose,
    prepare_log_folders,
)
from serving.log_retention import KeptInputs, enforce_record_limits
from serving.log_settings import LOG_DIR_VARIABLE, PredictionLogConfig, log_environment
from storage.errors import ModelError
from storage.prediction_log import model_log_dir
from storage.settings import Settings, env_name

STATE = ApplianceState(
    models=(ServedModel("digits", 0, "blue", "onebox/model:digits-v1", "", workers=1),),
    network=ApplianceNetwork.for_subnet(ipaddress.IPv4Network("10.99.0.0/24")),
)


def test_each_log_setting_is_a_setting_with_the_same_default() -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    for spec in fields(PredictionLogConfig):
        if spec.name != "directory":
            assert spec.default == getattr(defaults, spec.name), spec.name
            assert Settings.model_fields[spec.name].description


def test_the_server_reads_back_what_the_settings_hand_over(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        home=tmp_path,
        prediction_log=False,
        keep_inputs=False,
        kept_inputs_max_mb=1.5,
        prediction_log_max_mb=2,
        prediction_log_days=3,
        prediction_log_queue=7,
    )
    handed = {**log_environment(settings.environment()), LOG_DIR_VARIABLE: str(settings.predictions_dir)}
    assert PredictionLogConfig.from_environment(handed) == PredictionLogConfig(
        settings.predictions_dir, False, False, 1.5, 2.0, 3, 7
    )
    assert not PredictionLogConfig.from_environment({}).enabled  # no folder named: off


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prediction_log_queue", "many", "give a int"),
        ("prediction_log_queue", "0", "must be 1 or more"),
        ("kept_inputs_max_mb", "-1", "must be above 0"),
        ("keep_inputs", "perhaps", "give a bool"),
    ],
)
def test_a_bad_value_stops_the_server_naming_it(field: str, value: str, message: str) -> None:
    with pytest.raises(ModelError, match=f"{env_name(field)}.*{message}|{message}.*"):
        PredictionLogConfig.from_environment({env_name(field): value, LOG_DIR_VARIABLE: "/tmp"})


def test_each_color_writes_into_its_models_folder_of_the_home(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, home=tmp_path / "home", prediction_log_queue=99)  # type: ignore[call-arg]
    prepare_log_folders(settings, STATE)
    folder = model_log_dir(settings.predictions_dir, "digits")
    assert folder.is_dir()
    blue = models_compose(STATE, settings)["services"]["model-digits-blue"]
    assert blue["volumes"] == ["model-sockets:/sockets", f"{folder}:{CONTAINER_LOG_DIR}/digits"]
    assert blue["environment"][LOG_DIR_VARIABLE] == CONTAINER_LOG_DIR
    assert blue["environment"]["ONEBOX_PREDICTION_LOG_QUEUE"] == "99"
    if os.geteuid() == 0:  # a root-owned home: the image's own user, who gets the folder
        assert "user" not in blue
        assert folder.stat().st_uid == MODEL_IMAGE_UID
        os.chown(settings.predictions_dir, 1234, 1234)  # a user's home: the colors run as that user
        assert log_user(settings) == "1234:1234"
        assert models_compose(STATE, settings)["services"]["model-digits-blue"]["user"] == "1234:1234"
    else:
        assert blue["user"] == f"{os.getuid()}:{os.getgid()}"
    # No settings: the socket's volume alone.
    assert models_compose(STATE)["services"]["model-digits-blue"]["volumes"] == ["model-sockets:/sockets"]


def test_the_image_user_is_the_one_the_runtime_image_creates() -> None:
    dockerfile = (COMPOSE_DIR / "runtime" / "Dockerfile").read_text()
    assert re.search(rf"useradd .*--uid {MODEL_IMAGE_UID} ", dockerfile)


def test_an_input_is_kept_once_and_the_least_recently_seen_go_first(tmp_path: Path) -> None:
    inputs = KeptInputs(tmp_path, max_bytes=2500, days=30)
    encodings: list[int] = []

    def encoded(index: int) -> bytes:
        encodings.append(index)
        return b"x" * 1000

    for index in range(3):
        path = inputs.keep("m", f"{index:064x}", "png", lambda index=index: encoded(index))  # type: ignore[misc]
        assert path == f"images/00/{index:064x}.png"
        then = time.time() - 100 + index
        os.utime(tmp_path / "m" / path, (then, then))
    assert not (tmp_path / "m" / f"images/00/{0:064x}.png").exists()  # the third went over 2500 bytes
    assert inputs.keep("m", f"{1:064x}", "png", lambda: b"not encoded again") is not None  # seen again
    inputs.keep("m", f"{3:064x}", "png", lambda: b"y" * 1000)
    kept = sorted(path.name[:-4].lstrip("0") or "0" for path in (tmp_path / "m" / "images").rglob("*.png"))
    assert kept == ["1", "3"]  # 2 was seen before 1 was seen again
    assert encodings == [0, 1, 2]
    assert inputs.keep("m", "f" * 64, "png", lambda: b"z" * 3000) is None  # larger than the whole cap


def test_a_folder_another_writer_emptied_meanwhile_is_no_error(tmp_path: Path) -> None:
    records = tmp_path / "m" / "records"
    for day in ("20000101", time.strftime("%Y%m%d")):
        (records / day).mkdir(parents=True)
        (records / day / "w.jsonl").write_text("{}\n" * 100)
    assert enforce_record_limits(tmp_path, "m", max_bytes=10, days=30) == 1  # the old day; the newest stays
    assert enforce_record_limits(tmp_path, "m", max_bytes=10, days=30) == 0
    assert enforce_record_limits(tmp_path, "gone", max_bytes=10, days=30) == 0
    assert KeptInputs(tmp_path, max_bytes=10, days=1).enforce("gone") == 0
