from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flows.evaluate import Evaluation
from flows.promote import decide_promotion, deploy_and_promote, ensure_production_served, rollback
from serving.runtime import ServerState
from storage.errors import ModelError, ServingError
from storage.registry import MODEL_CARD, PREVIOUS, PRODUCTION, configure_mlflow, move_production_alias, version_by_alias
from storage.settings import Settings


def evaluation(accuracy: float) -> Evaluation:
    return Evaluation(accuracy, accuracy, {"a": accuracy}, {"a": accuracy}, [[1]], ("a",))


def test_first_model_is_promoted() -> None:
    decision = decide_promotion(
        challenger_version="1",
        challenger=evaluation(0.5),
        production_version="",
        production=None,
        note="no production model yet",
        min_improvement=0.0,
    )
    assert decision.promote
    assert "no production model yet" in decision.reason


def test_better_challenger_is_promoted_and_worse_kept_out() -> None:
    better = decide_promotion(
        challenger_version="2",
        challenger=evaluation(0.97),
        production_version="1",
        production=evaluation(0.95),
        note="",
        min_improvement=0.01,
    )
    worse = decide_promotion(
        challenger_version="2",
        challenger=evaluation(0.955),
        production_version="1",
        production=evaluation(0.95),
        note="",
        min_improvement=0.01,
    )
    assert better.promote
    assert better.production_accuracy == 0.95
    assert not worse.promote
    assert worse.reason.startswith("kept production")
    assert "needed +0.0100" in worse.reason


def test_negative_minimum_forces_promotion() -> None:
    decision = decide_promotion(
        challenger_version="2",
        challenger=evaluation(0.5),
        production_version="1",
        production=evaluation(0.9),
        note="",
        min_improvement=-1.0,
    )
    assert decision.promote


def test_incomparable_production_is_replaced_with_the_reason() -> None:
    decision = decide_promotion(
        challenger_version="2",
        challenger=evaluation(0.5),
        production_version="1",
        production=None,
        note="production v1 was trained on other classes",
        min_improvement=0.0,
    )
    assert decision.promote
    assert "other classes" in decision.reason


# The deploy and the production alias, against a real MLflow SQLite registry and a fake runtime:
# a failed deploy is the one fault these tests need, and no real server can be made to fail on cue.


class FakeRuntime:
    """The runtime interface without a server; it notes what production was at each call."""

    def __init__(self, settings: Settings, *, serving: str | None = None, fail_deploy: bool = False) -> None:
        self.settings = settings
        self.fail_deploy = fail_deploy
        self.events: list[str] = []
        self.serving = self._state(serving) if serving else None

    def _state(self, version: str) -> ServerState:
        return ServerState(0, self.settings.model_name, version, "", f"http://fake/{version}", "now")

    def _production(self) -> str:
        production = version_by_alias(self.settings, PRODUCTION)
        return production.version if production else "none"

    def current(self) -> ServerState | None:
        return self.serving

    def deploy(self, bundle: Path) -> ServerState:
        version = json.loads((bundle / "metadata.json").read_text())["model_version"]
        self.events.append(f"deploy v{version} while production is {self._production()}")
        if self.fail_deploy:
            raise ServingError(f"model v{version} did not become ready")
        self.serving = self._state(version)
        return self.serving

    def retire_previous(self) -> None:
        self.events.append(f"retire while production is {self._production()}")

    def stop(self) -> ServerState | None:
        stopped, self.serving = self.serving, None
        return stopped

    def logs(self, *, lines: int = 100) -> str:
        return ""


@pytest.fixture(scope="module")
def registry_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MLflow store with versions 1-3 registered, built once; each test gets a copy."""
    from mlflow import MlflowClient

    home = tmp_path_factory.mktemp("registry") / "home"
    settings = Settings(home=home)
    experiment = configure_mlflow(settings)
    client = MlflowClient(settings.mlflow_tracking_uri)
    client.create_registered_model(settings.model_name)
    for number in (1, 2, 3):
        run_id = client.create_run(experiment).info.run_id
        folder = tmp_path_factory.mktemp(f"version-{number}")
        # Bytes, not a model: the fake runtime reads only the bundle's metadata.
        (folder / "model.onnx").write_bytes(b"not loaded by the fake runtime")
        (folder / MODEL_CARD).write_text(json.dumps({"classes": ["a"], "image_shape": [1, 2, 2]}))
        client.log_artifact(run_id, str(folder / "model.onnx"), artifact_path="onnx-model")
        client.log_artifact(run_id, str(folder / MODEL_CARD))
        source = f"{client.get_run(run_id).info.artifact_uri}/onnx-model"
        client.create_model_version(settings.model_name, source, run_id=run_id)
        client.set_terminated(run_id)
    return home


@pytest.fixture
def registry(registry_template: Path, tmp_path: Path) -> Settings:
    home = tmp_path / "home"
    shutil.copytree(registry_template, home)  # the artifacts stay in the template, read only
    return Settings(home=home, runtime="local")


def aliases(settings: Settings) -> tuple[str | None, str | None]:
    found = [version_by_alias(settings, alias) for alias in (PRODUCTION, PREVIOUS)]
    return tuple(version.version if version else None for version in found)  # type: ignore[return-value]


def test_production_moves_after_the_deploy_and_the_old_model_retires_after_the_move(registry: Settings) -> None:
    move_production_alias(registry, "1")
    runtime = FakeRuntime(registry, serving="1")

    url = deploy_and_promote(registry, "2", runtime=runtime)

    assert runtime.events == ["deploy v2 while production is 1", "retire while production is 2"]
    assert aliases(registry) == ("2", "1")
    assert url == "http://fake/2"


def test_a_failed_deploy_moves_nothing_and_retires_nothing(registry: Settings) -> None:
    move_production_alias(registry, "1")
    runtime = FakeRuntime(registry, serving="1", fail_deploy=True)

    with pytest.raises(ServingError, match="v2 did not become ready"):
        deploy_and_promote(registry, "2", runtime=runtime)

    assert runtime.events == ["deploy v2 while production is 1"]
    assert aliases(registry) == ("1", None)


def test_rollback_serves_previous_before_moving_production_back(registry: Settings) -> None:
    move_production_alias(registry, "1")
    move_production_alias(registry, "3")
    runtime = FakeRuntime(registry, serving="3")

    version, url = rollback(registry, runtime=runtime)

    assert (version, url) == ("1", "http://fake/1")
    assert runtime.events == ["deploy v1 while production is 3", "retire while production is 1"]
    assert aliases(registry) == ("1", "3")  # previous now names the version rolled back from


def test_a_failed_rollback_keeps_production(registry: Settings) -> None:
    move_production_alias(registry, "1")
    move_production_alias(registry, "2")
    runtime = FakeRuntime(registry, serving="2", fail_deploy=True)

    with pytest.raises(ServingError):
        rollback(registry, runtime=runtime)

    assert aliases(registry) == ("2", "1")
    assert runtime.events == ["deploy v1 while production is 2"]


def test_rollback_without_a_previous_version_is_a_clear_error(registry: Settings) -> None:
    move_production_alias(registry, "1")
    runtime = FakeRuntime(registry, serving="1")

    with pytest.raises(ModelError, match="no previous production version"):
        rollback(registry, runtime=runtime)
    assert runtime.events == []


def test_ensure_production_served_deploys_only_what_is_missing(registry: Settings) -> None:
    with pytest.raises(ModelError, match="no production model yet"):
        ensure_production_served(registry, runtime=FakeRuntime(registry))

    move_production_alias(registry, "2")
    already = FakeRuntime(registry, serving="2")
    assert ensure_production_served(registry, runtime=already).model_version == "2"
    assert already.events == []  # serving production already: nothing to do

    other = FakeRuntime(registry, serving="1")
    assert ensure_production_served(registry, runtime=other).model_version == "2"
    assert other.events == ["deploy v2 while production is 2", "retire while production is 2"]

    restarted = FakeRuntime(registry, serving="2")
    ensure_production_served(registry, restart=True, runtime=restarted)
    assert restarted.events == ["deploy v2 while production is 2", "retire while production is 2"]
    assert aliases(registry) == ("2", None)  # serving never moves the alias by itself
