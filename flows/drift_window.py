"""A drift check's window of records, its settings and its result: importable without numpy.

``onebox drift`` answers "not enough data" or "no production version" from here before it imports
the statistics (flows/drift.py) or starts a Prefect server.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from storage.errors import ModelError
from storage.prediction_log import PredictionRecord, read_records
from storage.registry import PRODUCTION, peek_alias

if TYPE_CHECKING:
    from storage.settings import Settings


@dataclass(frozen=True)
class DriftConfig:
    window: int = 500  # the newest records compared, at most
    minimum: int = 100  # fewer than this: not enough data (drift null), not "no drift"
    false_alarm_rate: float = 0.01  # of the whole check on a clean window
    permutations: int = 1000  # of the MMD test: its smallest p-value is 1 / (permutations + 1)

    @classmethod
    def from_settings(cls, settings: Settings) -> DriftConfig:
        return cls(
            window=settings.drift_window,
            minimum=settings.drift_min_records,
            false_alarm_rate=settings.drift_false_alarm_rate,
            permutations=settings.drift_permutations,
        )


@dataclass(frozen=True)
class DriftTest:
    name: str  # class_probability_ks | predicted_class_chi2 | embedding_mmd | confidence_ks
    statistic: float
    p_value: float
    alpha: float  # this test's share of the false-alarm rate: drift when p_value <= alpha
    subject: str = ""  # the class, for the per-class test

    @property
    def drifted(self) -> bool:
        return self.p_value <= self.alpha

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drift": self.drifted}


@dataclass(frozen=True)
class DriftResult:
    model: str
    version: str
    drift: bool | None  # None: not enough data, or no reference (``reason`` says which)
    reason: str  # one line
    window: int  # records compared
    minimum: int
    reference_size: int
    false_alarm_rate: float
    uses_embedding: bool
    tests: tuple[DriftTest, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tests": [test.to_dict() for test in self.tests]}


def served_version(settings: Settings, name: str) -> str:
    """The version a drift check compares: the model's production version, what serves.

    Raises:
        ModelError: the model has no production version.
    """
    production = peek_alias(settings, name, PRODUCTION)
    if production is None:
        raise ModelError(f"model {name} has no production version: nothing serves, so there is no drift to check")
    return production.version


def window_records(settings: Settings, name: str, version: str, config: DriftConfig) -> list[PredictionRecord]:
    """The newest ``config.window`` logged predictions of that version, oldest first."""
    return read_records(settings.predictions_dir, name, version=version, limit=config.window)


def not_checked(
    name: str, version: str, config: DriftConfig, reason: str, *, window: int, reference: int
) -> DriftResult:
    return DriftResult(
        model=name,
        version=version,
        drift=None,
        reason=reason,
        window=window,
        minimum=config.minimum,
        reference_size=reference,
        false_alarm_rate=config.false_alarm_rate,
        uses_embedding=False,
    )


def too_few(name: str, version: str, config: DriftConfig, count: int) -> DriftResult | None:
    """The "not enough data" result when fewer than the minimum were logged; None when there are enough."""
    if count >= config.minimum:
        return None
    reason = (
        f"not enough data: {count} predictions of {name} v{version} logged, the check needs at least "
        f"{config.minimum} (ONEBOX_DRIFT_MIN_RECORDS)"
    )
    return not_checked(name, version, config, reason, window=count, reference=0)


def summarize(tests: tuple[DriftTest, ...], *, window: int) -> str:
    """One line: drift or not, and which tests said so."""
    flagged = [f"{test.name}[{test.subject}]" if test.subject else test.name for test in tests if test.drifted]
    if not flagged:
        return f"no drift in the newest {window} predictions ({len(tests)} tests)"
    return f"drift in the newest {window} predictions: {', '.join(flagged)}"
