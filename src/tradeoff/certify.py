"""Certified robustness as an evaluation metric (interval bound propagation)."""

from __future__ import annotations

from tradeoff.errors import TradeoffError


def certification_metrics(spec) -> tuple:
    """Extra per-batch metrics for :func:`tradeoff.metrics.evaluate`: none unless
    ``eval.certified_eps`` is set."""
    if spec.eval.certified_eps is None:
        return ()
    raise TradeoffError("eval.certified_eps needs interval bound propagation, which this version lacks.")
