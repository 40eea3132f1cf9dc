"""Model bundles made in milliseconds: a real ONNX graph (flatten, then one dense layer), no training.

Each class's weights respond to one pixel, so a test can pick the answer by lighting that pixel;
the graph, the metadata and the server are the real ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from benchmarks.servers import free_port
from serving.local import LocalRuntime
from serving.metadata import EMBEDDING_OUTPUT, LOGITS_OUTPUT, METADATA_FILE, MODEL_FILE, ModelMetadata
from storage.settings import Settings


def write_bundle(
    folder: Path,
    *,
    model_name: str,
    version: str,
    classes: tuple[str, ...],
    image_shape: tuple[int, int, int],
    accuracy: float = 0.9,
    trained: str = "2026-12-01T20:00:00+00:00",
    embedding: int = 0,
) -> Path:
    """A model bundle whose class ``k`` wins when pixel ``k`` (in flattened order) is the brightest.

    ``embedding`` > 0 adds the second output a trained model's export has, ``embedding``: here the
    first ``embedding`` pixels of the flattened input (0: logits only, as bundles from before it)."""
    features = int(np.prod(image_shape))
    weights = np.zeros((features, len(classes)), dtype=np.float32)
    weights[np.arange(len(classes)), np.arange(len(classes))] = 10.0
    bias = np.linspace(0.1, 0.0, len(classes), dtype=np.float32)  # a blank image: the first class
    nodes = [
        helper.make_node("Flatten", ["images"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "weights", "bias"], [LOGITS_OUTPUT]),
    ]
    outputs = [helper.make_tensor_value_info(LOGITS_OUTPUT, TensorProto.FLOAT, ["batch", len(classes)])]
    initializer = [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")]
    if embedding:
        projection = np.eye(features, embedding, dtype=np.float32)
        nodes.append(helper.make_node("MatMul", ["flat", "projection"], [EMBEDDING_OUTPUT]))
        outputs.append(helper.make_tensor_value_info(EMBEDDING_OUTPUT, TensorProto.FLOAT, ["batch", embedding]))
        initializer.append(numpy_helper.from_array(projection, "projection"))
    graph = helper.make_graph(
        nodes,
        "bundle",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", *image_shape])],
        outputs,
        initializer=initializer,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / MODEL_FILE))
    ModelMetadata(
        model_name=model_name,
        model_version=version,
        run_id=f"run-{model_name}-{version}",
        dataset_name=f"{model_name}-data",
        dataset_version="1",
        classes=classes,
        image_shape=image_shape,
        metrics={"test_accuracy": accuracy},
        trained=trained,
    ).write(folder / METADATA_FILE)
    return folder


def lit_pixel(image_shape: tuple[int, int, int], index: int) -> np.ndarray:
    """An image (H, W) or (H, W, 3) for ``image_shape`` with only flattened pixel ``index`` lit."""
    channels, height, width = image_shape
    pixels = np.zeros((channels, height, width), dtype=np.uint8)
    pixels.reshape(-1)[index] = 255
    return pixels[0] if channels == 1 else np.ascontiguousarray(pixels.transpose(1, 2, 0))


DIGITS_SHAPE = (1, 8, 8)
COLORS_SHAPE = (3, 16, 16)
COLORS = ("red", "green", "blue")


def digits_bundle(folder: Path, version: str = "1", *, embedding: int = 0) -> Path:
    """A gray 8x8 10-class model named ``digits`` (``embedding``: with an embedding output that wide)."""
    return write_bundle(
        folder,
        model_name="digits",
        version=version,
        classes=tuple(str(d) for d in range(10)),
        image_shape=DIGITS_SHAPE,
        embedding=embedding,
    )


def colors_bundle(folder: Path, version: str = "1") -> Path:
    """A colour 16x16 3-class model named ``colors``."""
    return write_bundle(
        folder, model_name="colors", version=version, classes=COLORS, image_shape=COLORS_SHAPE, accuracy=0.75
    )


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    """Settings with a fresh home, a free port and one server worker (the machine is small)."""
    return Settings(home=tmp_path / "home", serve_port=free_port(), serve_workers=1)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalRuntime, dict[str, Path]]]:
    """One local model server serving ``digits`` (first, so the default) and ``colors``."""
    folder = tmp_path_factory.mktemp("two-models")
    settings = Settings(home=folder / "home", serve_port=free_port(), serve_workers=1)
    runtime = LocalRuntime(settings)
    bundles = {"digits": digits_bundle(folder / "digits"), "colors": colors_bundle(folder / "colors")}
    try:
        runtime.deploy(bundles["digits"])
        runtime.deploy(bundles["colors"])
        yield runtime, bundles
    finally:
        runtime.stop()
