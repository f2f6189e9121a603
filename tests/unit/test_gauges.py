"""The monitor's drift gauges stay visible between windows: Ray's metrics agent drops a gauge
series that is not set again for about 20 s, so the monitor sets its last values again."""

from __future__ import annotations

from typing import Any

from raymlops.monitoring.monitor import GAUGE_REFRESH_S, GaugeKeeper


class _Gauge:
    def __init__(self) -> None:
        self.calls: list[tuple[float, dict[str, str]]] = []

    def set(self, value: float, tags: dict[str, str]) -> None:
        self.calls.append((value, tags))


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_last_values_are_set_again_every_few_seconds() -> None:
    clock, share, score = _Clock(), _Gauge(), _Gauge()
    keeper = GaugeKeeper(clock=clock)
    keeper.set(share, 0.2, {"model": "churn"})
    keeper.set(score, 0.1, {"model": "churn", "column": "plan"})
    keeper.set(score, 0.3, {"model": "churn", "column": "plan"})  # a newer window
    keeper.set(score, 0.05, {"model": "churn", "column": "tenure"})
    assert keeper.refresh() == 0, "not due yet"
    clock.now += GAUGE_REFRESH_S
    assert keeper.refresh() == 3
    assert share.calls[-1] == (0.2, {"model": "churn"})
    latest: dict[Any, float] = {tags["column"]: value for value, tags in score.calls[-2:]}
    assert latest == {"plan": 0.3, "tenure": 0.05}, "each series' last value, set again"
    assert keeper.refresh() == 0, "once per period"
    for _ in range(12):  # a minute with no window: still set every period
        clock.now += GAUGE_REFRESH_S
        assert keeper.refresh() == 3
    assert GAUGE_REFRESH_S * 2 < 20, "well inside the ~20 s after which Ray drops a gauge"
