"""Inference runtimes: torch eager against ONNX Runtime, batch 1 and 64, on the served model.

The same function the training flow runs for the evaluation report (flows.export.check_export),
on the registered version's torch model and its ONNX export, with the test split as input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from storage.settings import Settings


def measure_runtimes(settings: Settings, name: str, version: str, torch_model: Path) -> dict[str, Any]:
    import torch

    from flows.export import LATENCY_BATCH_SIZES, check_export
    from flows.model import ConvClassifier
    from flows.prepare import split_dataset
    from serving.metadata import ModelMetadata
    from storage.datasets import BUILTIN_DATASET, open_images, resolve_dataset
    from storage.registry import materialize_bundle

    bundle = materialize_bundle(settings, name, version)
    metadata = ModelMetadata.read(bundle / "metadata.json")
    channels, height, width = metadata.image_shape
    model = ConvClassifier(channels=channels, height=height, width=width, num_classes=len(metadata.classes))
    model.load_state_dict(torch.load(torch_model, map_location="cpu", weights_only=True))
    test = split_dataset(open_images(resolve_dataset(BUILTIN_DATASET, None, settings)), seed=0).test
    check = check_export(model.eval(), bundle / "model.onnx", test.images, repeats=200)
    rows = {}
    for batch in LATENCY_BATCH_SIZES:
        torch_ms, onnx_ms = check.torch_latency_ms[batch], check.onnx_latency_ms[batch]
        rows[str(batch)] = {
            "torch_ms": round(torch_ms, 4),
            "onnx_ms": round(onnx_ms, 4),
            "torch_images_per_s": round(batch / torch_ms * 1000),
            "onnx_images_per_s": round(batch / onnx_ms * 1000),
            "onnx_speedup": round(torch_ms / onnx_ms, 1),
        }
    return {
        "model": f"{name} v{version}",
        "torch_threads": torch.get_num_threads(),
        "onnx_threads": 1,
        "batches": rows,
        "max_abs_logit_diff": check.max_abs_logit_diff,
        "top1_agreement": check.top1_agreement,
    }
