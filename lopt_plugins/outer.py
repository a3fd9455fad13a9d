"""Registers the core's gradient estimators and truncation schedules under their class names."""

from __future__ import annotations

import lopt_core


@lopt_core.hookimpl
def lopt_register(registry) -> None:
    """Register ``TruncatedPES``, ``FullES``, ``TruncatedGrad`` and the truncation schedules."""
    from lopt_core import outer  # the engine imports only when plugins are loaded

    for name in ("TruncatedPES", "FullES", "TruncatedGrad"):
        registry.register("gradient_estimator", name, getattr(outer, name))
    for name in (
        "ConstantTruncationSchedule",
        "LogUniformLengthSchedule",
        "NeverEndingTruncationSchedule",
    ):
        registry.register("truncation_schedule", name, getattr(outer, name))
