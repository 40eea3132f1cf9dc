"""Model code: a researcher's file, torchvision by name, initial weights; each bad input one line.

Fast: tiny models on CPU, nothing trains and nothing is tracked.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from flows.model_build import build_model
from flows.model_code import load_model_code, resolve_model_file
from flows.model_record import git_tags
from flows.parameters import TrainingParameters, parse_assignment
from flows.torchvision_models import ImageNetInput
from serving.checkout import SOURCE_ROOT
from storage.errors import ModelError, ParameterError

EXAMPLE = SOURCE_ROOT / "models" / "tinynet.py"
FLAT_FACTORY = (
    "def build(num_classes, input_shape, width=16):\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))\n"
)


def write_model(folder: Path, body: str, name: str = "mynet.py") -> Path:
    path = folder / name
    header = "from __future__ import annotations\nfrom pydantic import BaseModel, Field\nfrom torch import nn\n"
    path.write_text(header + textwrap.dedent(body))
    return path


def test_the_example_file_builds_with_its_hyperparameters_validated_and_defaulted() -> None:
    built = build_model(
        f"{EXAMPLE}:build", hyperparameters={"width": "8"}, num_classes=5, input_shape=(3, 20, 12), seed=0
    )
    assert built.hyperparameters == {"width": 8, "dropout": 0.1}  # "8" from the CLI is coerced, dropout defaulted
    assert built.code.kind == "file"
    assert built.code.source == EXAMPLE.read_text()
    assert built.module(torch.rand(3, 3, 20, 12)).shape == (3, 5)
    assert not built.module.training


def test_the_same_seed_builds_the_same_weights_and_the_probe_moves_no_statistics() -> None:
    first = build_model("builtin", hyperparameters={}, num_classes=3, input_shape=(1, 8, 8), seed=4)
    second = build_model("builtin", hyperparameters={}, num_classes=3, input_shape=(1, 8, 8), seed=4)
    for (name, a), b in zip(first.module.state_dict().items(), second.module.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    batch_norm: Any = next(m for m in first.module.modules() if isinstance(m, nn.BatchNorm2d))
    assert torch.equal(batch_norm.running_mean, torch.zeros_like(batch_norm.running_mean))
    assert int(batch_norm.num_batches_tracked) == 0


def test_a_relative_model_file_is_found_in_the_current_folder_then_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_model_file("models/tinynet.py") == EXAMPLE  # not here: the checkout's
    (tmp_path / "models").mkdir()
    own = write_model(tmp_path / "models", "def build(num_classes, input_shape): ...", name="tinynet.py")
    assert resolve_model_file("models/tinynet.py") == own.resolve()  # here first


@pytest.mark.parametrize(
    ("body", "spec_suffix", "hyperparameters", "error", "message"),
    [
        ("", "nope.py:build", {}, ModelError, "model file 'nope.py' not found"),
        ("def bulid(num_classes, input_shape): ...\n", "mynet.py:build", {}, ModelError, "did you mean 'bulid'"),
        ("def build(num_classes, input_shape:\n", "mynet.py:build", {}, ModelError, "SyntaxError"),
        (
            "def build(num_classes, input_shape):\n    raise ValueError('width must be even')\n",
            "mynet.py:build",
            {},
            ModelError,
            "raised while building the model: ValueError: width must be even (mynet.py line 5)",
        ),
        (
            "def build(num_classes, input_shape):\n    return 'a model'\n",
            "mynet.py:build",
            {},
            ModelError,
            "not a torch",
        ),
        (
            "def build(num_classes, input_shape):\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 7))\n",
            "mynet.py:build",
            {},
            ModelError,
            "of shape (2, 7) for a batch of shape (2, 1, 8, 8); expected float logits of shape (2, 3)",
        ),
        (
            "def build(num_classes, input_shape):\n    return nn.Sequential(nn.Flatten(), nn.Linear(10, 3))\n",
            "mynet.py:build",
            {},
            ModelError,
            "fails in layer '1' (Linear) on a 1x8x8 image batch (training mode): RuntimeError: ",
        ),
        (
            "class Hyperparameters(BaseModel):\n    width: int = Field(16, ge=4, le=256)\n" + FLAT_FACTORY,
            "mynet.py:build",
            {"width": 512},
            ParameterError,
            "width=512: Input should be less than or equal to 256",
        ),
        (
            "class Hyperparameters(BaseModel):\n    width: int = 16\n" + FLAT_FACTORY,
            "mynet.py:build",
            {"depth": 3},
            ParameterError,
            "has no hyperparameter depth (it has: width)",
        ),
        (
            FLAT_FACTORY,
            "mynet.py:build",
            {"depht": 3},
            ParameterError,
            "has no hyperparameter depht (it takes: width)",
        ),
        (
            "Hyperparameters = dict\ndef build(num_classes, input_shape): ...\n",
            "mynet.py:build",
            {},
            ModelError,
            "BaseModel",
        ),
        ("", "mynet.txt", {}, ModelError, "is not 'builtin', 'torchvision:NAME' or 'PATH.py:FUNCTION'"),
    ],
)
def test_bad_model_code_is_one_line_before_anything_trains(
    tmp_path: Path,
    body: str,
    spec_suffix: str,
    hyperparameters: dict[str, object],
    error: type[Exception],
    message: str,
) -> None:
    if body:
        write_model(tmp_path, body)
    with pytest.raises(error) as raised:
        build_model(
            str(tmp_path / spec_suffix) if spec_suffix != "nope.py:build" else spec_suffix,
            hyperparameters=hyperparameters,
            num_classes=3,
            input_shape=(1, 8, 8),
            seed=0,
        )
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_torchvision_by_name_adapts_gray_images_and_normalises_inside_the_module() -> None:
    built = build_model(
        "torchvision:mobilenet_v3_small",
        hyperparameters={"dropout": 0.0},
        num_classes=4,
        input_shape=(1, 32, 32),
        seed=0,
    )
    assert isinstance(built.module, ImageNetInput)
    assert built.module(torch.rand(2, 1, 32, 32)).shape == (2, 4)
    assert "mean" not in built.module.state_dict()  # a constant of the graph, not a weight


@pytest.mark.parametrize(
    ("spec", "hyperparameters", "shape", "message"),
    [
        ("torchvision:resnet", {}, (3, 32, 32), "no classification architecture 'resnet'; did you mean resnet"),
        ("torchvision:squeezenet1_1", {}, (3, 8, 8), "it needs images of at least about"),
        ("torchvision:resnet18", {"bogus": 1}, (3, 32, 32), "unexpected keyword argument 'bogus'"),
        ("torchvision:resnet18", {}, (4, 32, 32), "takes gray or RGB images; this dataset's have 4 channels"),
    ],
)
def test_torchvision_refusals_name_the_problem(
    spec: str, hyperparameters: dict[str, object], shape: tuple[int, int, int], message: str
) -> None:
    with pytest.raises(ModelError, match=None) as raised:
        build_model(spec, hyperparameters=hyperparameters, num_classes=3, input_shape=shape, seed=0)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_init_weights_fine_tune_with_a_new_head_and_refuse_what_does_not_fit(tmp_path: Path) -> None:
    import torchvision

    source = torchvision.models.get_model("mobilenet_v3_small", weights=None, num_classes=7)
    plain = tmp_path / "plain.pt"
    torch.save(source.state_dict(), plain)
    built = build_model(
        "torchvision:mobilenet_v3_small",
        hyperparameters={},
        num_classes=3,
        input_shape=(3, 32, 32),
        seed=1,
        init_weights=plain,
    )
    assert built.reinitialised == ("classifier.3.weight", "classifier.3.bias")
    network: Any = built.module.network
    assert torch.equal(network.features[0][0].weight, source.features[0][0].weight)
    assert network.classifier[3].weight.shape == (3, 1024)

    checkpoint = tmp_path / "checkpoint.pt"  # onebox's own keys (network.*) inside a checkpoint dict
    torch.save({"state_dict": built.module.state_dict(), "epoch": 3}, checkpoint)
    again = build_model(
        "torchvision:mobilenet_v3_small",
        hyperparameters={},
        num_classes=3,
        input_shape=(3, 32, 32),
        seed=2,
        init_weights=checkpoint,
    )
    assert again.reinitialised == ()
    rebuilt: Any = again.module
    assert torch.equal(rebuilt.network.classifier[3].weight, network.classifier[3].weight)

    other = tmp_path / "resnet.pt"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), other)
    with pytest.raises(
        ModelError, match=r"does not fit torchvision:mobilenet_v3_small: missing features\.0\.0\.weight"
    ):
        build_model(
            "torchvision:mobilenet_v3_small",
            hyperparameters={},
            num_classes=3,
            input_shape=(3, 32, 32),
            seed=0,
            init_weights=other,
        )
    not_weights = tmp_path / "notes.pt"
    not_weights.write_text("not a torch file")
    with pytest.raises(ModelError, match="is not a torch state dict"):
        build_model(
            "builtin", hyperparameters={}, num_classes=3, input_shape=(1, 8, 8), seed=0, init_weights=not_weights
        )


def test_weights_of_another_shape_outside_the_head_are_named(tmp_path: Path) -> None:
    path = write_model(
        tmp_path,
        "def build(num_classes, input_shape, width=4):\n"
        "    return nn.Sequential(nn.Conv2d(input_shape[0], width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),"
        " nn.Linear(width, num_classes))\n",
    )
    weights = tmp_path / "w.pt"
    narrow = load_model_code(f"{path}:build").factory(num_classes=3, input_shape=(1, 8, 8), width=4)
    torch.save(narrow.state_dict(), weights)
    with pytest.raises(ModelError) as raised:
        build_model(
            f"{path}:build",
            hyperparameters={"width": 6},
            num_classes=3,
            input_shape=(1, 8, 8),
            seed=0,
            init_weights=weights,
        )
    assert "other shape 0.weight (4, 1, 3, 3) vs (6, 1, 3, 3)" in str(raised.value)


def test_command_line_assignments_become_the_hyperparameters_object() -> None:
    assert parse_assignment("width=64") == ("width", 64)
    assert parse_assignment("act=relu") == ("act", "relu")
    assert parse_assignment("sizes=[1, 2]") == ("sizes", [1, 2])
    with pytest.raises(ValueError, match="not NAME=VALUE"):
        parse_assignment("width")
    parameters = TrainingParameters(model_hyperparameters=["width=64", "dropout=0.5"])  # type: ignore[arg-type]
    assert parameters.model_hyperparameters == {"width": 64, "dropout": 0.5}
    assert TrainingParameters(model_hyperparameters={"width": 64}) == TrainingParameters(
        model_hyperparameters=["width=64"]  # type: ignore[arg-type]
    )


def test_git_tags_name_the_commit_and_whether_the_file_differs(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "README").write_text("a researcher's checkout")
    git("add", "README")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    path = write_model(tmp_path, "def build(num_classes, input_shape): ...\n")
    assert git_tags(path)["onebox.model_code_dirty"] == "true"  # not committed yet
    git("add", "mynet.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "model")
    tags = git_tags(path)
    assert tags["onebox.model_code_dirty"] == "false"
    assert tags["onebox.model_code_path"] == "mynet.py"
    assert len(tags["onebox.model_code_commit"]) == 40
    assert git_tags(Path("/") / "tmp" / "no-such-repo" / "x.py") == {}
