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
