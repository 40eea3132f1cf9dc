"""Evaluate: the metrics onebox reports and gates on, from any model's predicted probabilities."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    macro_f1: float
    precision: dict[str, float]
    recall: dict[str, float]
    confusion: list[list[int]]  # rows: true class, columns: predicted class
    classes: tuple[str, ...]

    def flat_metrics(self, prefix: str = "test_") -> dict[str, float]:
        """Scalar metrics with MLflow-friendly names, e.g. test_accuracy, test_recall_3."""
        metrics = {f"{prefix}accuracy": self.accuracy, f"{prefix}macro_f1": self.macro_f1}
        for name in self.classes:
            metrics[f"{prefix}precision_{name}"] = self.precision[name]
            metrics[f"{prefix}recall_{name}"] = self.recall[name]
        return metrics

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_probabilities(probabilities: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> Evaluation:
    predicted = probabilities.argmax(axis=1)
    everything = list(range(len(classes)))
    precision, recall, _, _ = precision_recall_fscore_support(labels, predicted, labels=everything, zero_division=0)
    return Evaluation(
        accuracy=float(accuracy_score(labels, predicted)),
        macro_f1=float(f1_score(labels, predicted, labels=everything, average="macro", zero_division=0)),
        precision={c: float(p) for c, p in zip(classes, precision, strict=True)},
        recall={c: float(r) for c, r in zip(classes, recall, strict=True)},
        confusion=confusion_matrix(labels, predicted, labels=everything).tolist(),
        classes=classes,
    )
