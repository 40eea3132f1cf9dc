from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flows.evaluate import Evaluation
from flows.promote import (
    ProductionMovedError,
    binding_refusal,
    decide_promotion,
    deploy_and_promote,
    ensure_production_served,
    retire,
    rollback,
    serve_model,
)
from serving.local import LocalRuntime
from serving.runtime import ServerState
from storage.errors import ModelError, ServingError
from storage.model_binding import binding_tags, model_binding
from storage.registry import (
    MODEL_CARD,
    PREVIOUS,
    PRODUCTION,
    RETIRED_TAG,
    configure_mlflow,
    move_production_alias,
    registered_models,
    version_by_alias,
)
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


def test_a_refusal_wins_even_over_a_negative_minimum() -> None:
    decision = decide_promotion(
        challenger_version="4",
        challenger=evaluation(0.99),
        production_version="1",
        production=None,
        note="",
        min_improvement=-1.0,
        refusal="refused: model digits is bound ...",
    )
    assert not decision.promote
    assert decision.refused
    assert decision.reason == "refused: model digits is bound ..."
    assert decision.production_version == "1"


# The gate's binding, the deploy and the production alias, against a real MLflow SQLite registry
# and an in-memory runtime: a test double of the runtime seam (serving/runtime.py), because a
# failed deploy is one fault these tests need, and no real server can be made to fail on cue.
# The same flows against the real multi-model LocalRuntime: the last test here,
# tests/flows/test_pipeline.py and tests/serving/test_local.py.

DIGITS, PARTS = "digits", "parts"
MODELS = {DIGITS: (["a", "b"], [1, 2, 2], 3), PARTS: (["x", "y", "z"], [3, 4, 4], 2)}  # classes, shape, versions


class FakeRuntime:
    """Serves many named models without a server; it notes what production was at each call."""

    def __init__(
        self, settings: Settings, *, serving: dict[str, str] | None = None, fail_deploy: set[str] | None = None
    ) -> None:
        self.settings = settings
        self.fail_deploy = fail_deploy or set()
        self.events: list[str] = []
        self.serving = {name: self._state(name, version) for name, version in (serving or {}).items()}

    def _state(self, name: str, version: str) -> ServerState:
        return ServerState(0, name, version, "", f"http://fake/models/{name}", "now")

    def _production(self, name: str) -> str:
        production = version_by_alias(self.settings, name, PRODUCTION)
        return production.version if production else "none"

    def served(self) -> list[ServerState]:
        return list(self.serving.values())

    def current(self, model_name: str) -> ServerState | None:
        return self.serving.get(model_name)

    def deploy(self, bundle: Path) -> ServerState:
        metadata = json.loads((bundle / "metadata.json").read_text())
        name, version = metadata["model_name"], metadata["model_version"]
        self.events.append(f"deploy {name} v{version} while production is {self._production(name)}")
        if name in self.fail_deploy:
            raise ServingError(f"model {name} v{version} did not become ready")
        self.serving[name] = self._state(name, version)
        return self.serving[name]

    def retire_previous(self, model_name: str) -> None:
        self.events.append(f"retire {model_name} while production is {self._production(model_name)}")

    def stop(self, model_name: str | None = None) -> list[ServerState]:
        names = [model_name] if model_name else list(self.serving)
        self.events.extend(f"stop {name}" for name in names if name in self.serving)
        return [self.serving.pop(name) for name in names if name in self.serving]

    def logs(self, *, model_name: str | None = None, lines: int = 100) -> str:
        return ""


@pytest.fixture(scope="module")
def registry_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MLflow store with two models (digits v1-3, parts v1-2), built once; each test gets a copy."""
    from mlflow import MlflowClient

    home = tmp_path_factory.mktemp("registry") / "home"
    settings = Settings(home=home)
    experiment = configure_mlflow(settings)
    client = MlflowClient(settings.mlflow_tracking_uri)
    for name, (classes, shape, versions) in MODELS.items():
        client.create_registered_model(name)
        for number in range(1, versions + 1):
            run_id = client.create_run(experiment).info.run_id
            folder = tmp_path_factory.mktemp(f"{name}-{number}")
            # Bytes, not a model: the fake runtime reads only the bundle's metadata.
            (folder / "model.onnx").write_bytes(b"not loaded by the fake runtime")
            card = {"dataset_name": name, "dataset_version": "v1", "classes": classes, "image_shape": shape}
            (folder / MODEL_CARD).write_text(json.dumps(card))
            client.log_artifact(run_id, str(folder / "model.onnx"), artifact_path="onnx-model")
            client.log_artifact(run_id, str(folder / MODEL_CARD))
            source = f"{client.get_run(run_id).info.artifact_uri}/onnx-model"
            # The first digits version is tagged as registration tags now; the others as before (card only).
            tags = binding_tags(tuple(classes), tuple(shape)) if (name, number) == (DIGITS, 1) else None
            client.create_model_version(name, source, run_id=run_id, tags=tags)
            client.set_terminated(run_id)
    return home


@pytest.fixture
def registry(registry_template: Path, tmp_path: Path) -> Settings:
    home = tmp_path / "home"
    shutil.copytree(registry_template, home)  # the artifacts stay in the template, read only
    return Settings(home=home, runtime="local")


def aliases(settings: Settings, name: str = DIGITS) -> tuple[str | None, str | None]:
    found = [version_by_alias(settings, name, alias) for alias in (PRODUCTION, PREVIOUS)]
    return tuple(version.version if version else None for version in found)  # type: ignore[return-value]


def test_a_model_is_bound_by_its_first_version_tagged_or_not(registry: Settings) -> None:
    digits, parts = model_binding(registry, DIGITS), model_binding(registry, PARTS)
    assert digits is not None
    assert parts is not None
    assert (digits.version, digits.classes, digits.image_shape) == ("1", ("a", "b"), (1, 2, 2))  # from its tags
    assert (parts.version, parts.classes, parts.image_shape) == ("1", ("x", "y", "z"), (3, 4, 4))  # from its card
    assert model_binding(registry, "nothing-yet") is None


@pytest.mark.parametrize(
    ("classes", "shape", "what"),
    [
        (("a", "b", "c"), (1, 2, 2), "3 classes (a, b, c)"),  # another class count
        (("b", "a"), (1, 2, 2), "2 classes (b, a)"),  # the same classes in another order: other labels
        (("a", "b"), (3, 2, 2), "input shape 3x2x2"),  # colour instead of grey
        (("a", "b"), (1, 4, 4), "input shape 1x4x4"),  # another size
    ],
)
def test_a_challenger_of_other_classes_or_shape_is_refused_with_the_way_out(
    registry: Settings, classes: tuple[str, ...], shape: tuple[int, ...], what: str
) -> None:
    refusal = binding_refusal(registry, DIGITS, "4", classes=classes, image_shape=shape, dataset="other:v9")
    assert refusal.startswith("refused: model digits is bound by its first version v1 to 2 classes (a, b)")
    assert "other:v9 has " in refusal
    assert what in refusal.split("other:v9 has ", 1)[1]
    assert refusal.endswith("train it under a new model name (--model NEWNAME)")
    assert "\n" not in refusal


def test_a_challenger_of_the_same_task_or_a_new_model_is_not_refused(registry: Settings) -> None:
    same = binding_refusal(registry, DIGITS, "4", classes=("a", "b"), image_shape=(1, 2, 2), dataset="d:v2")
    # A model's first version is the challenger itself: nothing binds it yet.
    first = binding_refusal(registry, PARTS, "1", classes=("q",), image_shape=(1, 9, 9), dataset="p:v1")
    assert same == first == ""


def test_production_moves_after_the_deploy_and_the_old_model_retires_after_the_move(registry: Settings) -> None:
    move_production_alias(registry, DIGITS, "1")
    move_production_alias(registry, PARTS, "1")
    runtime = FakeRuntime(registry, serving={DIGITS: "1", PARTS: "1"})

    url = deploy_and_promote(registry, DIGITS, "2", runtime=runtime)

    assert runtime.events == ["deploy digits v2 while production is 1", "retire digits while production is 2"]
    assert aliases(registry) == ("2", "1")
    assert aliases(registry, PARTS) == ("1", None)  # the other model is not touched
    assert url == "http://fake/models/digits"
    assert runtime.current(PARTS).model_version == "1"  # type: ignore[union-attr]


def test_a_failed_deploy_moves_nothing_and_retires_nothing(registry: Settings) -> None:
    move_production_alias(registry, DIGITS, "1")
    runtime = FakeRuntime(registry, serving={DIGITS: "1"}, fail_deploy={DIGITS})

    with pytest.raises(ServingError, match="v2 did not become ready"):
        deploy_and_promote(registry, DIGITS, "2", runtime=runtime)

    assert runtime.events == ["deploy digits v2 while production is 1"]
    assert aliases(registry) == ("1", None)


def test_rollback_serves_previous_before_moving_production_back_and_leaves_the_other_model(
    registry: Settings,
) -> None:
    move_production_alias(registry, DIGITS, "1")
    move_production_alias(registry, DIGITS, "3")
    move_production_alias(registry, PARTS, "1")
    move_production_alias(registry, PARTS, "2")
    runtime = FakeRuntime(registry, serving={DIGITS: "3", PARTS: "2"})

    version, url = rollback(registry, DIGITS, runtime=runtime)

    assert (version, url) == ("1", "http://fake/models/digits")
    assert runtime.events == ["deploy digits v1 while production is 3", "retire digits while production is 1"]
    assert aliases(registry) == ("1", "3")  # previous now names the version rolled back from
    assert aliases(registry, PARTS) == ("2", "1")
    assert runtime.current(PARTS).model_version == "2"  # type: ignore[union-attr]


def test_rollback_to_any_earlier_version(registry: Settings) -> None:
    for version in ("1", "2", "3"):
        move_production_alias(registry, DIGITS, version)
    runtime = FakeRuntime(registry, serving={DIGITS: "3"})

    assert rollback(registry, DIGITS, to="1", runtime=runtime)[0] == "1"  # not only the one before
    assert aliases(registry) == ("1", "3")


@pytest.mark.parametrize(
    ("to", "message"),
    [("9", "model digits has no version '9'"), ("3", "model digits v3 is production already"), ("x", "no version")],
)
def test_rollback_to_a_bad_version_is_a_clear_error_and_moves_nothing(
    registry: Settings, to: str, message: str
) -> None:
    move_production_alias(registry, DIGITS, "1")
    move_production_alias(registry, DIGITS, "3")
    runtime = FakeRuntime(registry, serving={DIGITS: "3"})

    with pytest.raises(ModelError, match=message):
        rollback(registry, DIGITS, to=to, runtime=runtime)
    assert runtime.events == []
    assert aliases(registry) == ("3", "1")


def test_a_failed_rollback_keeps_production(registry: Settings) -> None:
    move_production_alias(registry, DIGITS, "1")
    move_production_alias(registry, DIGITS, "2")
    runtime = FakeRuntime(registry, serving={DIGITS: "2"}, fail_deploy={DIGITS})

    with pytest.raises(ServingError):
        rollback(registry, DIGITS, runtime=runtime)

    assert aliases(registry) == ("2", "1")
    assert runtime.events == ["deploy digits v1 while production is 2"]


class SlowRuntime(FakeRuntime):
    """A deploy that takes a while, as a real one does: the window two commands raced in."""

    def deploy(self, bundle: Path) -> ServerState:
        time.sleep(0.4)
        return super().deploy(bundle)


@pytest.mark.parametrize("second", ["serve --restart", "rollback --to 1", "retire"])
def test_a_rollback_and_a_second_command_at_once_run_one_after_the_other(registry: Settings, second: str) -> None:
    for version in ("1", "2", "3"):
        move_production_alias(registry, DIGITS, version)
    runtime = SlowRuntime(registry, serving={DIGITS: "3"})
    commands = {
        "serve --restart": lambda: serve_model(registry, DIGITS, restart=True, runtime=runtime),
        "rollback --to 1": lambda: rollback(registry, DIGITS, to="1", runtime=runtime),
        "retire": lambda: retire(registry, DIGITS, runtime=runtime),
    }
    errors: list[Exception] = []

    def run(command: Callable[[], object]) -> None:
        try:
            command()
        except ModelError as error:
            errors.append(error)

    first = threading.Thread(target=run, args=(lambda: rollback(registry, DIGITS, runtime=runtime),))
    first.start()
    time.sleep(0.1)  # the rollback holds the model's lock and is deploying
    then = threading.Thread(target=run, args=(commands[second],))
    then.start()
    first.join()
    then.join()

    # Each command's deploy and retirement of the old color are one block, never interleaved.
    kinds = [event.split()[0] for event in runtime.events]
    assert kinds in (["deploy", "retire", "deploy", "retire"], ["deploy", "retire", "stop"]), runtime.events
    production = version_by_alias(registry, DIGITS, PRODUCTION)
    assert production is not None
    served = runtime.current(DIGITS)
    if second == "retire":
        assert served is None
    else:  # what serves is what production names
        assert served is not None
        assert served.model_version == production.version
    assert errors == []


def test_a_deploy_whose_gate_compared_with_an_older_production_deploys_nothing(registry: Settings) -> None:
    move_production_alias(registry, DIGITS, "1")
    move_production_alias(registry, DIGITS, "2")  # another run (or a rollback) moved it meanwhile
    runtime = FakeRuntime(registry, serving={DIGITS: "2"})

    with pytest.raises(ProductionMovedError, match=r"production is v2 now, not v1 as when v3 was compared"):
        deploy_and_promote(registry, DIGITS, "3", runtime=runtime, compared_with="1")
    assert runtime.events == []
    assert aliases(registry) == ("2", "1")

    assert deploy_and_promote(registry, DIGITS, "3", runtime=runtime, compared_with="2") == "http://fake/models/digits"
    assert aliases(registry) == ("3", "2")
    with pytest.raises(ProductionMovedError, match=r"production is v3 now, not no production version"):
        deploy_and_promote(registry, DIGITS, "1", runtime=runtime, compared_with="")


def test_rollback_without_a_previous_version_is_a_clear_error(registry: Settings) -> None:
    move_production_alias(registry, DIGITS, "1")
    runtime = FakeRuntime(registry, serving={DIGITS: "1"})

    with pytest.raises(ModelError, match="no previous production version"):
        rollback(registry, DIGITS, runtime=runtime)
    assert runtime.events == []


def test_serve_model_deploys_only_what_is_missing(registry: Settings) -> None:
    with pytest.raises(ModelError, match="model digits has no production version yet"):
        serve_model(registry, DIGITS, runtime=FakeRuntime(registry))

    move_production_alias(registry, DIGITS, "2")
    already = FakeRuntime(registry, serving={DIGITS: "2"})
    assert serve_model(registry, DIGITS, runtime=already).model_version == "2"
    assert already.events == []  # serving production already: nothing to do

    other = FakeRuntime(registry, serving={DIGITS: "1"})
    assert serve_model(registry, DIGITS, runtime=other).model_version == "2"
    assert other.events == ["deploy digits v2 while production is 2", "retire digits while production is 2"]

    restarted = FakeRuntime(registry, serving={DIGITS: "2"})
    serve_model(registry, DIGITS, restart=True, runtime=restarted)
    assert restarted.events == ["deploy digits v2 while production is 2", "retire digits while production is 2"]
    assert aliases(registry) == ("2", None)  # serving never moves the alias by itself


def test_every_model_with_production_comes_back_but_a_retired_one_stays_retired(registry: Settings) -> None:
    assert ensure_production_served(registry, runtime=FakeRuntime(registry)) == []  # nothing in production yet
    move_production_alias(registry, DIGITS, "3")
    move_production_alias(registry, PARTS, "2")
    runtime = FakeRuntime(registry)  # `make down && make up`: nothing serves

    served = ensure_production_served(registry, runtime=runtime)

    assert sorted((state.model_name, state.model_version) for state in served) == [(DIGITS, "3"), (PARTS, "2")]

    stopped = retire(registry, PARTS, runtime=runtime)
    assert [state.model_name for state in stopped] == [PARTS]
    assert [state.model_name for state in runtime.served()] == [DIGITS]
    tags = {model.name: model.tags for model in registered_models(registry)}
    assert tags[PARTS] == {RETIRED_TAG: "true"}
    assert aliases(registry, PARTS) == ("2", None)  # the registry keeps it all

    again = FakeRuntime(registry)  # down and up again: the retired model stays retired
    assert [state.model_name for state in ensure_production_served(registry, runtime=again)] == [DIGITS]

    assert serve_model(registry, PARTS, runtime=again).model_version == "2"  # `onebox serve --model parts`
    assert {model.name: model.tags for model in registered_models(registry)}[PARTS] == {}
    assert retire(registry, PARTS, runtime=FakeRuntime(registry)) == []  # not serving: nothing to stop


def test_one_model_failing_to_come_back_does_not_keep_the_others_down(registry: Settings) -> None:
    move_production_alias(registry, DIGITS, "3")
    move_production_alias(registry, PARTS, "2")
    runtime = FakeRuntime(registry, fail_deploy={DIGITS})

    with pytest.raises(ServingError, match="digits v3 did not become ready"):
        ensure_production_served(registry, runtime=runtime)

    assert [state.model_name for state in runtime.served()] == [PARTS]


def test_a_legacy_version_of_other_classes_cannot_be_rolled_back_to(registry: Settings) -> None:
    """A home from before named models may hold another task's version under one name."""
    from mlflow import MlflowClient

    client = MlflowClient(registry.mlflow_tracking_uri, registry_uri=registry.mlflow_tracking_uri)
    parts_source = client.get_model_version(PARTS, "1")
    client.create_model_version(DIGITS, str(parts_source.source), run_id=parts_source.run_id)  # digits v4: parts' task
    move_production_alias(registry, DIGITS, "4")
    runtime = FakeRuntime(registry, serving={DIGITS: "4"})

    move_production_alias(registry, DIGITS, "1")
    with pytest.raises(ModelError, match="digits v4 answers other classes"):
        rollback(registry, DIGITS, to="4", runtime=runtime)
    assert runtime.events == []


def test_a_home_from_before_named_models_serves_its_model_under_that_name_and_as_default(registry: Settings) -> None:
    from mlflow import MlflowClient

    from serving.metadata import ModelMetadata
    from serving.runtime import default_model
    from storage.registry import LEGACY_MODEL_NAME, materialize_bundle

    client = MlflowClient(registry.mlflow_tracking_uri, registry_uri=registry.mlflow_tracking_uri)
    old = client.get_model_version(DIGITS, "1")
    client.create_registered_model(LEGACY_MODEL_NAME)  # what every run registered before models had names
    client.create_model_version(LEGACY_MODEL_NAME, str(old.source), run_id=old.run_id)
    move_production_alias(registry, LEGACY_MODEL_NAME, "1")
    runtime = FakeRuntime(registry)

    served = ensure_production_served(registry, runtime=runtime)

    assert [(state.model_name, state.model_version) for state in served] == [(LEGACY_MODEL_NAME, "1")]
    assert default_model(registry, runtime.served()) == LEGACY_MODEL_NAME
    bundle = materialize_bundle(registry, LEGACY_MODEL_NAME, "1")
    assert bundle == registry.models_dir / LEGACY_MODEL_NAME / "1"  # where an old home kept its bundles
    metadata = ModelMetadata.read(bundle / "metadata.json")
    assert (metadata.model_name, metadata.trained) == (LEGACY_MODEL_NAME, "")  # no training time in old cards


@pytest.mark.slow  # two real training runs (one epoch each) through the Prefect flow
def test_a_challenger_of_other_classes_under_an_existing_name_is_refused_and_production_untouched(
    prefect_server: None, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from flows.pipeline import training_pipeline
    from flows.run_record import fetch_report
    from storage.datasets import import_image_folder
    from storage.registry import count_versions
    from storage.settings import get_settings
    from tests.storage.test_datasets import make_folder

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ONEBOX_HOME", str(tmp_path / "home"))
        get_settings.cache_clear()
        try:
            settings = get_settings()
            first = training_pipeline(epochs=1, seed=0, deploy=False)  # digits v1: binds the model
            move_production_alias(settings, DIGITS, first.model_version)
            source = make_folder(tmp_path / "parts", classes=3, per_class=6, size=(8, 8))
            import_image_folder(source, name="parts", settings=settings)

            refused = training_pipeline(dataset="parts", model=DIGITS, epochs=1, deploy=True, min_improvement=-1.0)

            assert refused.decision.refused
            assert not refused.promoted
            assert refused.served_url is None
            assert refused.decision.reason.startswith("refused: model digits is bound by its first version v1")
            assert refused.decision.reason.endswith("(--model NEWNAME)")
            assert version_by_alias(settings, DIGITS, PRODUCTION).version == first.model_version  # type: ignore[union-attr]
            assert count_versions(settings, DIGITS) == 2  # still registered...
            tags = MlflowClient(settings.mlflow_tracking_uri).get_run(refused.run_id).data.tags
            assert tags["onebox.gate"] == "refused"
            html = fetch_report(settings, refused.run_id).read_text()  # ...and reported, with the reason
            assert "Not promoted." in html
            assert "Not compared with digits&#39;s production v1: model digits is bound" in html
            assert refused.decision.production_version == first.model_version
            assert "no production version yet" not in html

            new_name = training_pipeline(dataset="parts", model="parts", epochs=1, deploy=False)
            assert new_name.decision.promote  # a new task under a new name: its own first version
            assert (new_name.model_name, new_name.model_version) == ("parts", "1")
        finally:
            get_settings.cache_clear()


@pytest.mark.slow  # three short training runs and a real multi-model server over HTTP
def test_rollback_of_one_model_leaves_the_other_serving_and_retire_brings_back(
    prefect_server: None, tmp_path: Path
) -> None:
    import httpx

    from benchmarks.servers import free_port
    from flows.pipeline import training_pipeline
    from storage.datasets import import_image_folder
    from storage.settings import get_settings
    from tests.storage.test_datasets import make_folder

    def served_version(settings: Settings, name: str) -> str | None:
        answer = httpx.get(f"{settings.serve_url}/models/{name}/metadata", timeout=10)
        return str(answer.json()["model_version"]) if answer.status_code == 200 else None

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ONEBOX_HOME", str(tmp_path / "home"))
        patch.setenv("ONEBOX_SERVE_PORT", str(free_port()))
        patch.setenv("ONEBOX_RUNTIME", "local")
        get_settings.cache_clear()
        settings = get_settings()
        try:
            training_pipeline(epochs=1, seed=0, deploy=True)  # digits v1
            training_pipeline(epochs=1, seed=1, deploy=True, min_improvement=-1.0)  # digits v2
            source = make_folder(tmp_path / "parts", classes=3, per_class=6, size=(8, 8))
            import_image_folder(source, name="parts", settings=settings)
            training_pipeline(dataset="parts", epochs=1, deploy=True)  # parts v1, its own endpoint
            assert (served_version(settings, DIGITS), served_version(settings, PARTS)) == ("2", "1")

            assert rollback(settings, DIGITS)[0] == "1"

            assert (served_version(settings, DIGITS), served_version(settings, PARTS)) == ("1", "1")
            assert aliases(settings, PARTS) == ("1", None)

            retire(settings, PARTS)
            assert served_version(settings, PARTS) is None
            assert served_version(settings, DIGITS) == "1"
            assert [state.model_name for state in ensure_production_served(settings)] == [DIGITS]
            assert serve_model(settings, PARTS).model_version == "1"
            assert served_version(settings, PARTS) == "1"
        finally:
            LocalRuntime(settings).stop()
            get_settings.cache_clear()


@pytest.mark.slow  # real Prefect flow runs (the test server)
def test_the_rollback_flow_names_its_model_and_refuses_an_unknown_one(prefect_server: None, registry: Settings) -> None:
    from flows.operations import rollback_production
    from storage.settings import get_settings

    move_production_alias(registry, DIGITS, "1")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ONEBOX_HOME", str(registry.home))
        patch.setenv("ONEBOX_RUNTIME", "local")
        get_settings.cache_clear()
        try:
            with pytest.raises(ModelError, match=r"^unknown model 'nope'; known models: digits, parts$"):
                rollback_production(model="nope")
            with pytest.raises(ModelError, match="there are 2 models"):
                rollback_production()
            with pytest.raises(ModelError, match="model digits has no previous production version"):
                rollback_production(model=DIGITS)
            with pytest.raises(ModelError, match="model digits v1 is production already"):
                rollback_production(model=DIGITS, version="1")
        finally:
            get_settings.cache_clear()
    assert aliases(registry) == ("1", None)
