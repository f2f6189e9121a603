"""The promotion gate (pure): may a challenger replace the champion?

Both are scored on the challenger's holdout. The main metric must improve by at least
``min_improvement`` (0: a tie passes); no other metric may get worse by more than
``max_metric_drop`` (``None``: not checked). With no champion, the challenger passes.

Example:
    >>> decide("roc_auc", {"roc_auc": 0.91}, None, GateConfig()).passed
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from raymlops.config import GateConfig
from raymlops.training.metrics import higher_is_better

__all__ = ["GateDecision", "decide"]


@dataclass(frozen=True)
class GateDecision:
    """The verdict with one reason per rule checked (saved in the version as gate.json)."""

    passed: bool
    metric: str
    challenger: dict[str, float]
    champion: dict[str, float] | None
    champion_version: str | None = None
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _gain(metric: str, new: float, old: float) -> float:
    """How much better ``new`` is than ``old`` (positive: better), whatever the metric's mode."""
    return new - old if higher_is_better(metric) else old - new


def decide(
    metric: str,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    gate: GateConfig,
    *,
    champion_version: str | None = None,
) -> GateDecision:
    """Compare challenger and champion metrics (same holdout) under the gate's rules."""
    if champion is None:
        return GateDecision(
            True,
            metric,
            challenger,
            None,
            None,
            ["no champion yet: the first model becomes champion"],
        )
    reasons: list[str] = []
    passed = True
    new, old = challenger[metric], champion[metric]
    if math.isnan(new):
        return GateDecision(
            False,
            metric,
            challenger,
            champion,
            champion_version,
            [f"{metric} of the challenger is undefined on this holdout"],
        )
    gain = _gain(metric, new, old) if not math.isnan(old) else math.inf
    if gain >= gate.min_improvement:
        reasons.append(
            f"{metric} {new:.4f} vs champion {old:.4f}: change {gain:+.4f} >= required {gate.min_improvement:+.4f}"
        )
    else:
        passed = False
        reasons.append(
            f"{metric} {new:.4f} vs champion {old:.4f}: change {gain:+.4f} < required {gate.min_improvement:+.4f}"
        )
    if gate.max_metric_drop is not None:
        for name, value in challenger.items():
            if name == metric or name not in champion:
                continue
            drop = -_gain(name, value, champion[name])
            if not math.isnan(drop) and drop > gate.max_metric_drop:
                passed = False
                reasons.append(
                    f"{name} got worse by {drop:.4f} (> max_metric_drop {gate.max_metric_drop:.4f})"
                )
    return GateDecision(passed, metric, challenger, champion, champion_version, reasons)
