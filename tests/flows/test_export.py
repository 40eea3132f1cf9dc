"""Export: a model ONNX cannot export, or whose graph computes something else, is refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from flows.export import check_export, export_onnx
from storage.errors import ModelError

IMAGES = np.random.default_rng(0).integers(0, 256, (6, 1, 4, 4), dtype=np.uint8)


@torch.library.custom_op("onebox_test::mirror", mutates_args=())
def mirror(images: torch.Tensor) -> torch.Tensor:
    return images.flip(-1)


@mirror.register_fake
def _(images: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(images)


class CustomOp(nn.Module):
    """Uses an op torch knows and ONNX has no function for."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.fc(mirror(images).flatten(1))
        return logits


class ExportsSomethingElse(nn.Module):
    """Computes other logits while being exported: the parity check's case."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # not named "images": export goes by position
        logits: torch.Tensor = self.fc(x.flatten(1))
        return logits + 0.5 if torch.compiler.is_exporting() else logits


def test_a_faithful_export_passes_with_its_figures(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    path = export_onnx(model, tmp_path / "model.onnx", input_shape=(1, 4, 4))
    check = check_export(model, path, IMAGES, repeats=2)
    assert check.max_abs_logit_diff < 1e-5
    assert check.top1_agreement == 1.0
    assert check.torch_parameters == 16 * 3 + 3


def test_an_export_that_differs_from_torch_names_the_difference_and_where(tmp_path: Path) -> None:
    model = ExportsSomethingElse()
    path = export_onnx(model, tmp_path / "model.onnx", input_shape=(1, 4, 4))
    with pytest.raises(ModelError) as raised:
        check_export(model, path, IMAGES, repeats=2)
    message = str(raised.value)
    assert "differs from torch by up to 5.00e-01 in logits (tolerance 1e-03), first at test image 0, logit 0" in message
    assert message.endswith("it is not registered")


@pytest.mark.slow  # the ONNX translation tries every decomposition first (about 10 s)
def test_an_op_onnx_has_no_function_for_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as raised:
        export_onnx(CustomOp(), tmp_path / "model.onnx", input_shape=(1, 4, 4))
    message = str(raised.value)
    assert message.startswith("the model cannot be exported to ONNX, so it is not registered: ONNX export failed")
    assert "No ONNX function found for <OpOverload(op='onebox_test.mirror'" in message
    assert "\n" not in message
    assert not (tmp_path / "model.onnx").exists()


class HeadNotLast(nn.Module):
    """Its last nn.Linear by module order is defined but never called."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 3)
        self.unused = nn.Linear(3, 3)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.fc(images.flatten(1))
        return logits


def _session_outputs(path: Path) -> list[str]:
    from serving.predictor import create_session

    return [output.name for output in create_session(path).get_outputs()]


def test_the_export_has_the_last_linear_layers_input_as_embedding(tmp_path: Path) -> None:
    hidden = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU())
    model = nn.Sequential(hidden, nn.Dropout(0.5), nn.Linear(8, 3))
    path = export_onnx(model, tmp_path / "model.onnx", input_shape=(1, 4, 4))
    assert _session_outputs(path) == ["logits", "embedding"]
    check = check_export(model, path, IMAGES, repeats=2)
    assert check.embedding_size == 8
    assert check.max_abs_embedding_diff is not None
    assert check.max_abs_embedding_diff < 1e-5
    assert check.flat_metrics()["onnx_embedding_size"] == 8

    from serving.predictor import softmax

    session_inputs = IMAGES.astype(np.float32) / 255
    predictor_outputs = _predictor(path).infer(IMAGES)
    with torch.no_grad():
        expected_embedding = hidden.eval()(torch.from_numpy(session_inputs)).numpy()
        expected_logits = model.eval()(torch.from_numpy(session_inputs)).numpy()
    probabilities, embedding = predictor_outputs
    assert embedding is not None
    np.testing.assert_allclose(embedding, expected_embedding, atol=1e-5)
    np.testing.assert_allclose(probabilities, softmax(expected_logits), atol=1e-5)


def _predictor(path: Path):
    from serving.metadata import ModelMetadata
    from serving.predictor import OnnxPredictor

    metadata = ModelMetadata("m", "1", "run", "d", "v", ("a", "b", "c"), (1, 4, 4))
    return OnnxPredictor(path, metadata)


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.Conv2d(1, 3, kernel_size=4), nn.Flatten()),  # no nn.Linear at all
        HeadNotLast(),
    ],
    ids=["no-linear", "last-linear-unused"],
)
def test_a_model_without_a_usable_last_linear_exports_logits_only(tmp_path: Path, model: nn.Module) -> None:
    path = export_onnx(model, tmp_path / "model.onnx", input_shape=(1, 4, 4))
    assert _session_outputs(path) == ["logits"]
    check = check_export(model, path, IMAGES, repeats=2)
    assert check.max_abs_embedding_diff is None
    assert check.embedding_size == 0
    assert "onnx_max_abs_embedding_diff" not in check.flat_metrics()
    predictor = _predictor(path)
    assert not predictor.has_embedding
    probabilities, embedding = predictor.infer(IMAGES)
    assert embedding is None
    assert probabilities.shape == (6, 3)


@pytest.mark.slow  # exporting a resnet takes 10-20 s
def test_a_torchvision_model_exports_its_pooled_features_as_embedding(tmp_path: Path) -> None:
    from flows.torchvision_models import build

    model = build("resnet18", 4, (1, 32, 32)).eval()
    path = export_onnx(model, tmp_path / "model.onnx", input_shape=(1, 32, 32))
    assert _session_outputs(path) == ["logits", "embedding"]
    images = np.random.default_rng(2).integers(0, 256, (4, 1, 32, 32), dtype=np.uint8)
    check = check_export(model, path, images, repeats=1)
    assert check.embedding_size == 512  # resnet18's fc takes the pooled 512 features
    assert check.max_abs_embedding_diff is not None
    assert check.max_abs_embedding_diff < 1e-3
