"""Seeds aggregated: the sentence a researcher needs instead of one row per training seed.

"4/4 on 5 of 5 seeds, weight error 0.0072 ± 0.0014, worst 0.0093" is the result; five rows are
raw material. Jobs that differ only in their seeds (``seed``, ``data.seed``) are grouped, and each
metric gets n, mean ± sd and its *worst* value, since a default is judged by its worst seed.
Pure functions on plain dicts: the sweep summary and ``benchmarks/fidelity.py`` both use them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gmm_vae.analysis.registry import METRICS

# Overrides that only re-draw randomness: jobs differing in these alone are one setting.
SEED_KEYS = ("seed", "data.seed")

# metric -> the value it is judged against (the registry's ``target``): "worst" is the value
# farthest from it. Modes are judged as a fraction of K (ideal 1), derived here from
# modes_captured / n_components; the HQ ratio at 1 (above is too concentrated, below too
# diffuse).
AGGREGATED: dict[str, float] = {
    "modes_fraction": 1.0,
    **{m.name: m.target for m in METRICS if m.target is not None},
}


@dataclass
class Stat:
    """n, mean, sample standard deviation and worst value of one metric over seeds."""

    n: int
    mean: float
    sd: float
    worst: float

    def text(self, digits: int = 4) -> str:
        sd = f" ± {self.sd:.{digits}f}" if self.n > 1 else ""
        return f"{self.mean:.{digits}f}{sd} (worst {self.worst:.{digits}f})"


@dataclass
class SeedGroup:
    """Jobs sharing every setting but their seeds."""

    settings: dict[str, str]
    jobs: list[str] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)
    all_captured: int = 0
    collapsed: int = 0
    evaluated: int = 0
    stats: dict[str, Stat] = field(default_factory=dict)

    def captured_text(self) -> str:
        return f"all modes on {self.all_captured} of {self.evaluated} seeds"


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def stat(values: Sequence[float], ideal: float) -> Stat | None:
    """n, mean ± sd and the value farthest from ``ideal``; None without a finite value."""
    xs = [v for v in (_finite(x) for x in values) if v is not None]
    if not xs:
        return None
    mean = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return Stat(len(xs), mean, sd, max(xs, key=lambda x: abs(x - ideal)))


def group_by_seed(jobs: Sequence[tuple[str, Mapping[str, str], Mapping[str, Any]]],
                  seed_keys: Sequence[str] = SEED_KEYS) -> list[SeedGroup]:
    """Group ``(job name, overrides, metrics)`` by every override except ``seed_keys``.

    ``metrics`` holds flat values: ``modes_captured``, ``n_components``, ``weights_tv``,
    ``nll_gap``, ``hq_ratio``, ``sliced_wasserstein``, ``posterior_collapsed`` (any may be
    missing). Groups keep the order in which their first job appears.
    """
    groups: dict[tuple[tuple[str, str], ...], SeedGroup] = {}
    values: dict[tuple[tuple[str, str], ...], dict[str, list[float]]] = {}
    for name, overrides, metrics in jobs:
        key = tuple(sorted((k, str(v)) for k, v in overrides.items() if k not in seed_keys))
        group = groups.setdefault(key, SeedGroup(settings=dict(key)))
        group.jobs.append(name)
        group.seeds.append(", ".join(f"{k}={overrides[k]}" for k in seed_keys
                                     if k in overrides) or "default")
        captured, k = _finite(metrics.get("modes_captured")), _finite(metrics.get("n_components"))
        if captured is None or not k:
            continue
        group.evaluated += 1
        group.all_captured += int(captured >= k)
        group.collapsed += int(bool(metrics.get("posterior_collapsed")))
        per = values.setdefault(key, {m: [] for m in AGGREGATED})
        per["modes_fraction"].append(captured / k)
        for metric in AGGREGATED:
            if metric != "modes_fraction" and _finite(metrics.get(metric)) is not None:
                per[metric].append(float(metrics[metric]))
    for key, group in groups.items():
        for metric, ideal in AGGREGATED.items():
            s = stat(values.get(key, {}).get(metric, []), ideal)
            if s is not None:
                group.stats[metric] = s
    return list(groups.values())


def has_repeats(groups: Sequence[SeedGroup]) -> bool:
    """Whether any setting ran on more than one seed (else the table would say nothing new)."""
    return any(len(g.jobs) > 1 for g in groups)
