"""Export: the trained model as ONNX, checked for parity with torch and timed against it."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import torch

from flows.model import ConvClassifier
from serving.predictor import create_session
from storage.errors import ModelError
from storage.images import normalize

# Beyond this the exported graph computes something else than the trained model.
PARITY_TOLERANCE = 1e-3
LATENCY_BATCH_SIZES = (1, 64)


@dataclass(frozen=True)
class ExportCheck:
    max_abs_logit_diff: float
    top1_agreement: float
    torch_latency_ms: dict[int, float]  # batch size -> median milliseconds per batch
    onnx_latency_ms: dict[int, float]
    onnx_size_bytes: int
    torch_parameters: int

    def flat_metrics(self) -> dict[str, float]:
        metrics = {
            "onnx_max_abs_logit_diff": self.max_abs_logit_diff,
            "onnx_top1_agreement": self.top1_agreement,
            "onnx_size_bytes": float(self.onnx_size_bytes),
        }
        for batch in LATENCY_BATCH_SIZES:
            metrics[f"torch_latency_ms_b{batch}"] = self.torch_latency_ms[batch]
            metrics[f"onnx_latency_ms_b{batch}"] = self.onnx_latency_ms[batch]
        return metrics


def export_onnx(model: ConvClassifier, path: Path) -> Path:
    """Write the model as a single-file ONNX graph with a dynamic batch dimension."""
    model = model.to("cpu").eval()
    example = torch.zeros(2, *model.input_shape)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        model,
        (example,),
        dynamo=True,
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes={"images": {0: batch}},
        external_data=False,
        verbose=False,
    )
    if program is None:
        raise ModelError("torch.onnx.export returned no program")
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path))
    return path


def _median_ms(run: Callable[[], object], repeats: int) -> float:
    run()  # warm up: first calls allocate and pick kernels
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def check_export(model: ConvClassifier, onnx_path: Path, images: np.ndarray, *, repeats: int = 30) -> ExportCheck:
    """Compare ONNX Runtime with torch on ``images`` (uint8) and time both on CPU.

    Raises:
        ModelError: the exported graph's predictions differ from torch's.
    """
    model = model.to("cpu").eval()
    session = create_session(onnx_path)
    inputs = normalize(images)
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(inputs)).numpy()
    onnx_logits = session.run(None, {"images": inputs})[0]
    max_diff = float(np.abs(torch_logits - onnx_logits).max())
    agreement = float((torch_logits.argmax(1) == onnx_logits.argmax(1)).mean())
    if max_diff > PARITY_TOLERANCE:
        raise ModelError(
            f"the ONNX export differs from torch by {max_diff:.2e} in logits "
            f"(tolerance {PARITY_TOLERANCE:.0e}); the export is not served"
        )
    torch_ms: dict[int, float] = {}
    onnx_ms: dict[int, float] = {}
    for batch in LATENCY_BATCH_SIZES:
        sample = np.resize(inputs, (batch, *inputs.shape[1:]))
        with torch.no_grad():
            torch_ms[batch] = _median_ms(partial(model, torch.from_numpy(sample)), repeats)
        onnx_ms[batch] = _median_ms(partial(session.run, None, {"images": sample}), repeats)
    return ExportCheck(
        max_abs_logit_diff=max_diff,
        top1_agreement=agreement,
        torch_latency_ms=torch_ms,
        onnx_latency_ms=onnx_ms,
        onnx_size_bytes=onnx_path.stat().st_size,
        torch_parameters=sum(p.numel() for p in model.parameters()),
    )
