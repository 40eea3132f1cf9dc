"""One definition of the training parameters: the flow's schema, its validation and the CLI agree.

Fast: Prefect's schema and validation are read from the real flow object, the CLI is the real
``onebox`` command; nothing trains.
"""

from __future__ import annotations

import pytest
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema

from flows.deployments import _field_labels
from flows.parameters import TrainingParameters, bounds, describe, flat_parameters
from flows.pipeline import training_pipeline
from storage.settings import Settings

FIELDS = TrainingParameters.model_fields
MODEL_SCHEMA = TrainingParameters.model_json_schema()["properties"]
LIMITS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "enum", "default")


def test_the_flow_schema_is_the_model_flat() -> None:
    properties = parameter_schema(training_pipeline).model_dump()["properties"]
    assert list(properties) == list(FIELDS)  # one flat parameter per field, in order
    for name, field in properties.items():
        expected = {key: MODEL_SCHEMA[name][key] for key in LIMITS if key in MODEL_SCHEMA[name]}
        assert {key: field[key] for key in LIMITS if key in field} == expected, name
    assert properties["learning_rate"]["exclusiveMinimum"] == 0
    assert properties["seed"]["maximum"] == 2**31 - 1
    assert properties["device"]["enum"] == ["auto", "cpu", "cuda"]


def test_the_run_form_shows_titles_and_descriptions_with_limits() -> None:
    labels = _field_labels(training_pipeline.fn)
    assert set(labels) == set(FIELDS)
    for name, field in FIELDS.items():
        assert labels[name] == {"title": field.title, "description": describe(field)}
    assert labels["epochs"]["description"].endswith("(1 to 1000).")
    assert bounds(FIELDS["learning_rate"]) == "above 0, at most 1"


@pytest.mark.parametrize(
    ("bad", "named"),
    [({"learning_rate": 0}, "learning_rate"), ({"device": "gpu"}, "device"), ({"seed": 2**31}, "seed")],
)
def test_prefect_rejects_a_bad_value_by_name(bad: dict[str, object], named: str) -> None:
    # What the engine runs before the flow's body, and the API with enforce_parameter_schema.
    with pytest.raises(ParameterTypeError, match=named):
        training_pipeline.validate_parameters(bad)


def test_flat_values_validate_into_the_model() -> None:
    assert training_pipeline.validate_parameters({"epochs": "2"})["epochs"] == 2

    received: list[TrainingParameters] = []

    @flat_parameters(TrainingParameters)
    def record(parameters: TrainingParameters, *, note: str = "") -> str:
        received.append(parameters)
        return note

    assert record(epochs=2, note="kept") == "kept"
    assert received == [TrainingParameters(epochs=2)]
    assert TrainingParameters(epochs=2).hyperparameters()["epochs"] == 2
    assert set(TrainingParameters.hyperparameter_names()) == set(FIELDS) - {
        "dataset",
        "dataset_version",
        "model",
        "resume",
    }


@pytest.mark.parametrize("bad", ["Digits", "../x", "a/b", "my model", "m" * 65, "", "-lead"])
def test_an_unsafe_model_name_is_refused_before_the_flow_starts(bad: str) -> None:
    with pytest.raises(ParameterTypeError, match="model"):
        training_pipeline.validate_parameters({"model": bad})


def test_the_model_name_defaults_to_the_dataset() -> None:
    assert TrainingParameters(dataset="parts").model_name == "parts"
    assert TrainingParameters(dataset="parts", model="parts-v2.small_1").model_name == "parts-v2.small_1"
    assert training_pipeline.validate_parameters({"model": None})["model"] is None


@pytest.mark.slow  # starts Prefect's test server
def test_the_registered_deployment_takes_flat_parameters_and_refuses_bad_ones(
    prefect_server: None, settings: Settings
) -> None:
    """What the UI's Run button and `onebox train` on the worker send: a flat dict of values."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    from flows.deployments import deployment_name, register_all

    register_all(settings)
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(deployment_name("training-pipeline"))
        assert deployment.parameter_openapi_schema is not None
        properties = deployment.parameter_openapi_schema["properties"]
        assert list(properties) == list(FIELDS)
        assert properties["epochs"]["title"] == "Epochs"
        assert properties["learning_rate"]["exclusiveMinimum"] == 0

        run = client.create_flow_run_from_deployment(deployment.id, parameters={"epochs": 2})
        try:
            assert run.parameters["epochs"] == 2
            with pytest.raises(PrefectHTTPStatusError) as refused:
                client.create_flow_run_from_deployment(deployment.id, parameters={"learning_rate": 0})
            assert refused.value.response.status_code == 409
            assert "learning_rate" in refused.value.response.text
            with pytest.raises(PrefectHTTPStatusError) as unsafe:
                client.create_flow_run_from_deployment(deployment.id, parameters={"model": "../Etc"})
            assert unsafe.value.response.status_code == 409
            assert "model" in unsafe.value.response.text
        finally:
            client.delete_flow_run(run.id)  # no worker polls this server: it would only wait


def test_the_rollback_flow_takes_a_model_name_and_a_version() -> None:
    from flows.operations import rollback_production

    properties = parameter_schema(rollback_production).model_dump()["properties"]
    assert list(properties) == ["model", "version"]
    assert _field_labels(rollback_production.fn)["model"]["title"] == "Model name"
    assert rollback_production.validate_parameters({"model": "digits", "version": "3"}) == {
        "model": "digits",
        "version": "3",
    }
    with pytest.raises(ParameterTypeError, match="model"):
        rollback_production.validate_parameters({"model": "../Digits"})
