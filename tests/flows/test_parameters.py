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
    assert set(TrainingParameters.hyperparameter_names()) == set(FIELDS) - {"dataset", "dataset_version"}
