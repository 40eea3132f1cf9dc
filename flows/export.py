"""Export: the trained model as ONNX, checked for parity with torch and timed against it."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from serving.metadata import EMBEDDING_OUTPUT, LOGITS_OUTPUT
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
    max_abs_embedding_diff: float | None = None  # None: the graph has no embedding output
    embedding_size: int = 0

    def flat_metrics(self) -> dict[str, float]:
        metrics = {
            "onnx_max_abs_logit_diff": self.max_abs_logit_diff,
            "onnx_top1_agreement": self.top1_agreement,
            "onnx_size_bytes": float(self.onnx_size_bytes),
            "onnx_embedding_size": float(self.embedding_size),
        }
        if self.max_abs_embedding_diff is not None:
            metrics["onnx_max_abs_embedding_diff"] = self.max_abs_embedding_diff
        for batch in LATENCY_BATCH_SIZES:
            metrics[f"torch_latency_ms_b{batch}"] = self.torch_latency_ms[batch]
            metrics[f"onnx_latency_ms_b{batch}"] = self.onnx_latency_ms[batch]
        return metrics


ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")
SUMMARY_LINE = re.compile(r"^<class '(?:[\w.]+\.)?(\w+)'>: (.+)$", re.MULTILINE)
USER_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\w+)\n\s+(.+)')


def export_failure(error: BaseException) -> str:
    """torch.onnx's pages of advice condensed to one line: the failing step, op or line of code.

    Its message has an "Exception summary" whose ``<class 'X'>: message`` lines name the cause
    (the op ONNX has no function for, the data-dependent branch torch.export could not trace).
    """
    text = ANSI_CODES.sub("", str(error))
    causes = SUMMARY_LINE.findall(text)
    if causes:
        # The first line of the summary is the root cause; "No ONNX function found for <op>" names the op.
        name, message = causes[0]
        reason = f"{name}: {message.strip()}"
    else:
        first = text.strip().splitlines()[0] if text.strip() else ""
        reason = f"{type(error).__name__}: {first}"
    if len(reason) > 300:
        reason = reason[:297] + "..."
    frame = USER_FRAME.search(text)
    where = f" at {frame[1]}:{frame[2]} in {frame[3]}: {frame[4].strip()}" if frame else ""
    step = "torch.export could not trace the model" if "torch.export" in text.split("\n")[0] else "ONNX export failed"
    return f"{step}: {reason}{where}"


class WithEmbedding(nn.Module):
    """The model, returning its logits and the input of its last ``nn.Linear`` (the embedding).

    The last linear layer by module order, whatever the architecture calls it; a forward
    pre-hook reads its input during the model's own forward, so the model's code is untouched
    and one graph computes both.
    """

    def __init__(self, model: nn.Module, last_linear: nn.Linear) -> None:
        super().__init__()
        self.model = model
        self.last_linear = last_linear

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen: list[torch.Tensor] = []
        handle = self.last_linear.register_forward_pre_hook(lambda _layer, inputs: seen.append(inputs[0]))
        try:
            logits: torch.Tensor = self.model(images)
        finally:
            handle.remove()
        # Its last call when a layer is used twice; a linear layer over tokens gives (N, T*D).
        return logits, seen[-1].flatten(1)


def with_embedding(model: nn.Module, *, input_shape: tuple[int, int, int]) -> WithEmbedding | None:
    """``model`` wrapped to return its embedding too; None when it has no usable ``nn.Linear``.

    Unusable: none at all, or the last one is not called in the forward pass, or not once per
    image (its input's first dimension is not the batch).
    """
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        return None
    seen: list[tuple[int, ...]] = []
    handle = linears[-1].register_forward_pre_hook(lambda _layer, inputs: seen.append(tuple(inputs[0].shape)))
    try:
        with torch.no_grad():
            model.to("cpu").eval()(torch.zeros(3, *input_shape))
    finally:
        handle.remove()
    if not seen or seen[-1][0] != 3:
        return None
    return WithEmbedding(model, linears[-1]).eval()


def export_onnx(model: nn.Module, path: Path, *, input_shape: tuple[int, int, int]) -> Path:
    """Write the model as a single-file ONNX graph with a dynamic batch dimension.

    Its outputs are ``logits`` and, when the model has a final ``nn.Linear``, ``embedding`` (that
    layer's input, for the drift check). ``input_shape`` is the dataset's (C, H, W): the model's
    own attributes are not part of the model-code contract.

    Raises:
        ModelError: the model cannot be exported, in one line naming the op or line of code.
    """
    model = model.to("cpu").eval()
    wrapped = with_embedding(model, input_shape=input_shape)
    example = torch.zeros(2, *input_shape)
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        program = torch.onnx.export(
            wrapped or model,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=[LOGITS_OUTPUT, EMBEDDING_OUTPUT] if wrapped else [LOGITS_OUTPUT],
            # By position: a researcher's forward may name its argument anything.
            dynamic_shapes=({0: batch},),
            external_data=False,
            verbose=False,
        )
    except Exception as error:
        raise ModelError(
            f"the model cannot be exported to ONNX, so it is not registered: {export_failure(error)}"
        ) from error
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


def check_export(model: nn.Module, onnx_path: Path, images: np.ndarray, *, repeats: int = 30) -> ExportCheck:
    """Compare ONNX Runtime with torch on ``images`` (uint8) and time both on CPU.

    Raises:
        ModelError: the exported graph's predictions differ from torch's.
    """
    model = model.to("cpu").eval()
    session = create_session(onnx_path)
    inputs = normalize(images)
    outputs = session.run(None, {"images": inputs})
    onnx_logits = outputs[0]
    has_embedding = EMBEDDING_OUTPUT in [output.name for output in session.get_outputs()]
    channels, height, width = images.shape[1:]
    wrapped = with_embedding(model, input_shape=(channels, height, width)) if has_embedding else None
    with torch.no_grad():
        if wrapped is not None:
            logits, embedding = wrapped(torch.from_numpy(inputs))
            torch_logits, torch_embedding = logits.numpy(), embedding.numpy()
        else:
            torch_logits, torch_embedding = model(torch.from_numpy(inputs)).numpy(), None
    if onnx_logits.shape != torch_logits.shape:
        raise ModelError(
            f"the ONNX export returns shape {onnx_logits.shape} where torch returns {torch_logits.shape}; "
            "it is not registered"
        )
    difference = np.abs(torch_logits - onnx_logits)
    max_diff = float(np.nan_to_num(difference, nan=np.inf).max())
    agreement = float((torch_logits.argmax(1) == onnx_logits.argmax(1)).mean())
    if max_diff > PARITY_TOLERANCE:
        image, logit = (int(i) for i in np.argwhere(~(difference <= PARITY_TOLERANCE))[0])
        raise ModelError(
            f"the ONNX export differs from torch by up to {max_diff:.2e} in logits (tolerance "
            f"{PARITY_TOLERANCE:.0e}), first at test image {image}, logit {logit} "
            f"({torch_logits[image, logit]:.4g} vs {onnx_logits[image, logit]:.4g}); it is not registered"
        )
    embedding_diff = _embedding_difference(torch_embedding, outputs[1]) if torch_embedding is not None else None
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
        max_abs_embedding_diff=embedding_diff,
        embedding_size=0 if torch_embedding is None else int(torch_embedding.shape[1]),
    )


def _embedding_difference(torch_embedding: np.ndarray, onnx_embedding: np.ndarray) -> float:
    """The largest difference of the two embeddings.

    Raises:
        ModelError: they differ beyond the tolerance, relative to the embedding's scale (its
            values are not logits: a wide layer's can be large).
    """
    if onnx_embedding.shape != torch_embedding.shape:
        raise ModelError(
            f"the ONNX export's embedding has shape {onnx_embedding.shape} where torch's has "
            f"{torch_embedding.shape}; it is not registered"
        )
    difference = float(np.nan_to_num(np.abs(torch_embedding - onnx_embedding), nan=np.inf).max())
    scale = max(1.0, float(np.abs(torch_embedding).max()))
    if difference > PARITY_TOLERANCE * scale:
        raise ModelError(
            f"the ONNX export's embedding differs from torch by up to {difference:.2e} (tolerance "
            f"{PARITY_TOLERANCE:.0e} x {scale:.3g}); it is not registered"
        )
    return difference
