"""Drift monitoring: the drift engine, Evidently reports, the retrain policy and the monitor.

Submodules are imported where used (nothing is imported here, so ``import raymlops.monitoring``
starts nothing and pulls in neither Ray nor Evidently):

* :mod:`raymlops.monitoring.drift`: per-column drift equal to Evidently's (pure, no Ray),
* :mod:`raymlops.monitoring.parallel`: the same over column groups as Ray tasks,
* :mod:`raymlops.monitoring.reports`: Evidently reports, their files and the workspace.
"""

__all__: list[str] = []
