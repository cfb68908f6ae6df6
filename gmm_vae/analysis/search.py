"""The one number a hyper-parameter search maximises, from an evaluation's metrics."""

from __future__ import annotations

import math
from typing import Any


def objective(evaluation: dict[str, Any] | None) -> float:
    """One number to maximise in a search: share of modes captured minus the errors.

    ``modes_captured / K - weights_tv - max(nll_gap, 0)``: 1 for a perfect model; each missed
    mode costs 1/K, each nat of likelihood gap costs 1. Both coverage terms are judged against
    a perfect sampler over all samples drawn, so a collapsed or barely trained model scores
    near or below 0 (it cannot earn modes with stray samples). NaN when any term is missing or
    not finite (a NaN likelihood is stored as null): a search must never read a broken
    evaluation as a perfect one.
    """
    if not evaluation:
        return float("nan")
    cov, nll = evaluation.get("coverage") or {}, evaluation.get("nll") or {}
    try:
        terms = [float(cov["modes_captured"]), float(cov["n_components"]),
                 float(cov["weights_tv"]), float(nll["gap"])]
    except (KeyError, TypeError, ValueError):
        return float("nan")
    captured, k, tv, gap = terms
    if not all(math.isfinite(t) for t in terms) or k <= 0:
        return float("nan")
    return captured / k - tv - max(gap, 0.0)
