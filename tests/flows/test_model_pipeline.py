"""The researcher's own model through the real pipeline: a Prefect flow run, an MLflow store, a model server.

Small generated data (a dozen images per class), one epoch, CPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from benchmarks.servers import free_port
from flows.model_record import rebuild_from_run
from serving.checkout import SOURCE_ROOT
from storage.datasets import import_image_folder
from storage.errors import ModelError, OneboxError, ParameterError
from storage.registry import count_versions
from storage.settings import Settings, get_settings
from tests.conftest import png_bytes
from tests.storage.test_datasets import make_folder

EXAMPLE = SOURCE_ROOT / "models" / "tinynet.py"
ONEBOX = str(Path(sys.executable).with_name("onebox"))


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A home of its own with two tiny datasets: gray 10x12 and colour 32x32, three classes each."""
    root = tmp_path_factory.mktemp("model-pipeline")
    patch = pytest.MonkeyPatch()
    patch.setenv("ONEBOX_HOME", str(root / "home"))
    patch.setenv("ONEBOX_SERVE_PORT", str(free_port()))
    get_settings.cache_clear()
    settings = get_settings()
    import_image_folder(make_folder(root / "gray", classes=3, per_class=12), name="gray", settings=settings)
    colour = make_folder(root / "colour", classes=3, per_class=12, size=(32, 32), rgb=True)
    import_image_folder(colour, name="colour", settings=settings)
    try:
        yield settings
    finally:
        patch.undo()
        get_settings.cache_clear()


def all_runs(settings: Settings) -> list[object]:
    client = MlflowClient(settings.mlflow_tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(experiments)) if experiments else []


def model_file(folder: Path, body: str) -> Path:
    path = folder / "net.py"
    path.write_text("import torch\nfrom torch import nn\n" + textwrap.dedent(body))
    return path


@pytest.mark.slow
def test_a_model_file_is_trained_served_and_rebuilt_from_its_logged_code(
    home: Settings, prefect_server: None, tmp_path: Path
) -> None:
    from flows.pipeline import training_pipeline
    from serving.local import LocalRuntime

    code = tmp_path / "tinynet.py"
    shutil.copy(EXAMPLE, code)
    # The parameters as the run form sends them: flat, the model's own values one JSON object.
    form = {
        "dataset": "gray",
        "epochs": 1,
        "model_code": f"{code}:build",
        "model_hyperparameters": {"width": 8},
        "min_improvement": -1.0,
    }
    try:
        result = training_pipeline(**training_pipeline.validate_parameters(form))
        assert result.promoted
        client = MlflowClient(home.mlflow_tracking_uri)
        run = client.get_run(result.run_id)
        assert run.data.params["model_code"] == f"{code}:build"
        assert run.data.params["hp.width"] == "8"
        assert run.data.params["hp.dropout"] == "0.1"  # the file's default, logged too
        assert run.data.tags["onebox.model_code_sha256"] == __import__("hashlib").sha256(code.read_bytes()).hexdigest()
        logged = {a.path for a in client.list_artifacts(result.run_id, "model_code")}
        assert logged == {"model_code/build.json", "model_code/state_dict.pt", "model_code/tinynet.py"}

        code.write_text("raise RuntimeError('the file changed after the run')\n")  # the logged copy is what ran
        rebuilt = rebuild_from_run(home, result.run_id)
        image = np.random.default_rng(5).integers(0, 256, (10, 12), dtype=np.uint8)
        with torch.no_grad():
            logits = rebuilt(torch.from_numpy(image[np.newaxis, np.newaxis].astype(np.float32) / 255))
        expected = torch.softmax(logits, dim=1)[0].tolist()
        answer = httpx.post(f"{result.served_url}/predict", files={"image": ("x.png", png_bytes(image), "image/png")})
        assert answer.status_code == 200, answer.text
        served = answer.json()
        assert served["model_version"] == result.model_version
        assert list(served["probabilities"].values()) == pytest.approx(expected, abs=1e-5)
    finally:
        LocalRuntime(home).stop()


@pytest.mark.slow
def test_torchvision_by_name_fine_tunes_from_a_local_weights_file(home: Settings, prefect_server: None) -> None:
    import mlflow
    import torchvision

    from flows.pipeline import training_pipeline

    weights = home.home / "weights" / "resnet18-5.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), weights)  # another class count
    versions = count_versions(home, "colour")

    result = training_pipeline(
        dataset="colour",
        epochs=1,
        batch_size=16,
        model_code="torchvision:resnet18",
        init_weights="weights/resnet18-5.pt",  # relative: found under ONEBOX_HOME
        deploy=False,
    )

    assert count_versions(home, "colour") == versions + 1
    tags = MlflowClient(home.mlflow_tracking_uri).get_run(result.run_id).data.tags
    assert tags["onebox.init_weights"] == str(weights)
    assert tags["onebox.init_weights_reinitialised"] == "fc.weight, fc.bias"
    info = mlflow.models.get_model_info(f"models:/{result.model_name}/{result.model_version}")
    assert info.signature is not None
    assert info.signature.inputs.to_dict() == [
        {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": (-1, 3, 32, 32)}, "name": "images"}
    ]
    assert info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 3)
    assert info.saved_input_example_info is not None

    # The registered graph and the module rebuilt from the run's logged code compute the same logits.
    import onnxruntime

    graph = mlflow.onnx.load_model(f"models:/{result.model_name}/{result.model_version}")
    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(1).random((4, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        rebuilt = rebuild_from_run(home, result.run_id)(torch.from_numpy(images)).numpy()
    assert np.abs(session.run(None, {"images": images})[0] - rebuilt).max() < 1e-3


BAD_MODELS = {
    "missing factory": ("def make(num_classes, input_shape):\n    return nn.Linear(1, 1)\n", {}, ModelError),
    "raises": ("def build(num_classes, input_shape):\n    raise ValueError('no')\n", {}, ModelError),
    "wrong shape": (
        "def build(num_classes, input_shape):\n    return nn.Sequential(nn.Flatten(), nn.LazyLinear(2))\n",
        {},
        ModelError,
    ),
    "out of bounds": (
        "from pydantic import BaseModel, Field\n"
        "class Hyperparameters(BaseModel):\n    width: int = Field(8, le=64)\n"
        "def build(num_classes, input_shape, width=8):\n    return nn.Sequential(nn.Flatten(), nn.LazyLinear(3))\n",
        {"width": 65},
        ParameterError,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_model_code_stops_the_flow_before_anything_is_stored(
    home: Settings, prefect_server: None, tmp_path: Path, case: str
) -> None:
    from flows.pipeline import training_pipeline

    body, hyperparameters, error = BAD_MODELS[case]
    path = model_file(tmp_path, body)
    runs, versions = len(all_runs(home)), count_versions(home, "gray")
    with pytest.raises(error):
        training_pipeline(
            dataset="gray", epochs=1, model_code=f"{path}:build", model_hyperparameters=hyperparameters, deploy=False
        )
    assert (len(all_runs(home)), count_versions(home, "gray")) == (runs, versions)


@pytest.mark.slow
def test_weights_that_do_not_fit_stop_the_flow_naming_the_keys(
    home: Settings, prefect_server: None, tmp_path: Path
) -> None:
    from flows.pipeline import training_pipeline

    weights = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(1)}, weights)
    runs = len(all_runs(home))
    with pytest.raises(ModelError, match=r"does not fit builtin: missing features\.0\.weight.*unexpected conv\.weight"):
        training_pipeline(dataset="gray", epochs=1, init_weights=str(weights), deploy=False)
    assert len(all_runs(home)) == runs


@pytest.mark.slow
def test_a_model_onnx_cannot_export_fails_the_run_with_nothing_registered(
    home: Settings, prefect_server: None, tmp_path: Path
) -> None:
    from flows.pipeline import training_pipeline

    # Trains fine in torch; torch.export cannot trace a branch on the data's values.
    path = model_file(
        tmp_path,
        """
        class Branchy(nn.Module):
            def __init__(self, num_classes):
                super().__init__()
                self.fc = nn.Linear(120, num_classes)

            def forward(self, images):
                if images.mean() > 2:
                    return -self.fc(images.flatten(1))
                return self.fc(images.flatten(1))

        def build(num_classes, input_shape):
            return Branchy(num_classes)
        """,
    )
    versions = count_versions(home, "gray")
    with pytest.raises(ModelError) as raised:
        training_pipeline(dataset="gray", epochs=1, model_code=f"{path}:build", deploy=False)
    message = str(raised.value)
    assert message.startswith("the model cannot be exported to ONNX, so it is not registered: torch.export")
    assert "data-dependent" in message
    assert f"{path}:" in message
    assert "if images.mean() > 2:" in message
    assert "\n" not in message
    assert count_versions(home, "gray") == versions
    failed = [r for r in all_runs(home) if r.info.status == "FAILED"]  # type: ignore[attr-defined]
    assert failed, "the run that could not export is marked FAILED"


@pytest.mark.slow  # three commands, each importing torch
def test_the_command_line_refuses_bad_model_code_in_one_line_before_anything_starts(tmp_path: Path) -> None:
    env = {**os.environ, "ONEBOX_HOME": str(tmp_path / "home"), "COLUMNS": "300"}
    bad = model_file(tmp_path, "def build(num_classes, input_shape):\n    return nn.Linear(3, 3)\n")
    cases = [
        (["--model-code", "nope.py:build"], "model file 'nope.py' not found"),
        (["--model-code", f"{EXAMPLE}:build", "--hp", "width=1000"], "width=1000: Input should be less than"),
        (["--model-code", f"{bad}:build"], "fails on a 1x8x8 image batch (training mode): RuntimeError:"),
    ]
    for args, message in cases:
        done = subprocess.run(
            [ONEBOX, "train", *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 1, (args, done.stderr)
        assert message in done.stderr, args
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr + done.stdout
    # Nothing stored: no MLflow store, no Prefect server, no run.
    assert not (tmp_path / "home" / "mlflow.db").exists()
    assert not (tmp_path / "home" / "run").exists() or not any((tmp_path / "home" / "run").iterdir())


def test_the_run_form_takes_the_model_hyperparameters_as_one_object() -> None:
    from prefect.exceptions import ParameterTypeError
    from prefect.utilities.callables import parameter_schema

    from flows.pipeline import training_pipeline

    properties = parameter_schema(training_pipeline).model_dump()["properties"]
    assert properties["model_hyperparameters"]["type"] == "object"
    assert properties["model_code"]["default"] == "builtin"
    checked = training_pipeline.validate_parameters({"model_hyperparameters": {"width": 8}})
    assert checked["model_hyperparameters"] == {"width": 8}
    with pytest.raises(ParameterTypeError, match="model_hyperparameters"):
        training_pipeline.validate_parameters({"model_hyperparameters": 8})
    assert issubclass(ParameterError, OneboxError)
