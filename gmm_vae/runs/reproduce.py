"""``rerun=<run dir>``: train a copy of a run from its directory alone, and say whether its
numbers come out the same.

``python train.py rerun=<run dir>`` takes the run's saved config (``.hydra/config.yaml``, read by
``rerun.load_run_config`` as ``evaluate.py`` reads it) and its mixture (``gmm.yaml`` wins when the
config no longer rebuilds it: ``rerun.mixture_config``), puts this command's explicit settings
on top (``resume.with_overrides``: ``trainer.accelerator=cpu``, say), and trains that into a new
run directory. The new directory's ``.hydra/config.yaml`` is then the config it trained with,
so it is a run like any other (``evaluate.py``, ``resume=``, a second re-run). At the end the
final losses, the objective and every metric of the summary table are compared with the
original's (``compare``): on CPU the same seeds give the same numbers, so any difference is
named. The verdict is printed and kept in the new run's ``status.json`` (``rerun_of``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gmm_vae.io import atomic_write_text
from gmm_vae.runs import rundir
from gmm_vae.runs.rerun import load_run_config, mixture_config
from gmm_vae.runs.resume import with_overrides
from gmm_vae.runs.sweep_jobs import METRIC_PATHS
from gmm_vae.values import lookup

STATUS_KEY = "rerun_of"
# Two numbers within this relative difference are the same result (float32 training on one
# machine repeats bit for bit; this only forgives the last digits of a JSON round trip).
REL_TOL = 1e-6


def rerun_config(cfg: DictConfig, explicit: Sequence[str]) -> tuple[DictConfig, Path]:
    """The config of the run in ``cfg.rerun``, on its own mixture, with this command's
    ``explicit`` settings on top; and the source run's directory. ConfigError if unusable."""
    source = Path(str(cfg.rerun)).expanduser()
    saved = load_run_config(source, setting="rerun")
    with_overrides(saved, cfg, explicit)
    saved.rerun = None
    saved.resume = None
    saved.sweep_resume = bool(cfg.sweep_resume)
    if saved.torch_threads is None and "torch_threads" not in explicit:
        # The source's thread count: another count reorders float sums, and 300 epochs turn
        # that into a different last digit (train loss 0.4161 with 1 thread, 0.4171 with 2).
        saved.torch_threads = _recorded_threads(source)
    return mixture_config(saved, source), source


def _recorded_threads(run_dir: Path) -> int | None:
    """The intra-op thread count the run recorded in ``status.json`` (None before it did)."""
    try:
        value = json.loads((run_dir / "status.json").read_text("utf-8")).get("torch_threads")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else None


def record_config(run_dir: Path, cfg: DictConfig) -> None:
    """Make ``<run_dir>/.hydra/config.yaml`` the config this run trains with (Hydra wrote the
    command's, whose only setting of note is ``rerun=``)."""
    atomic_write_text(run_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(cfg))


def _numbers(run_dir: Path) -> dict[str, Any]:
    """A run's final numbers by name: losses, objective, the summary table's metrics."""
    def read(path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    status = read(run_dir / "status.json")
    numbers: dict[str, Any] = dict(status.get("final_metrics") or {})
    numbers["objective"] = status.get("objective")
    metrics = read(run_dir / "evaluation" / "metrics.json")
    numbers.update({name: lookup(metrics, path) for name, path in METRIC_PATHS.items()}
                   if metrics else {})
    return numbers


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        if not (math.isfinite(a) and math.isfinite(b)):
            return (a != a and b != b) or a == b  # NaN matches NaN, inf matches itself
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)
    return a == b


@dataclass
class Reproduction:
    """How a re-run's final numbers compare with its source's."""

    source: Path
    compared: int = 0
    exact: bool = True
    differences: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def reproduced(self) -> bool:
        return self.compared > 0 and not self.differences

    def record(self) -> dict[str, Any]:
        return {"run_dir": str(self.source), "reproduced": self.reproduced,
                "exact": self.exact and self.reproduced, "compared": self.compared,
                "differences": self.differences, "missing": self.missing}

    def lines(self) -> list[str]:
        if self.compared == 0:
            return [f"Re-run of {self.source}: nothing to compare (the original has no final "
                    "metrics: was it completed?)"]
        if self.reproduced:
            how = "exactly" if self.exact else f"within a relative {REL_TOL:g}"
            head = f"Re-run of {self.source}: reproduces {how} ({self.compared} numbers)"
        else:
            head = (f"Re-run of {self.source}: does NOT reproduce: {len(self.differences)} of "
                    f"{self.compared} numbers differ")
        return [head, *(f"  {d}" for d in self.differences[:10])]


def compare(source: Path, run_dir: Path) -> Reproduction:
    """The re-run in ``run_dir`` against the run in ``source``, number by number."""
    old, new = _numbers(source), _numbers(run_dir)
    result = Reproduction(source)
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a is None and b is None:
            continue
        if a is None or b is None:
            result.missing.append(name)
            continue
        result.compared += 1
        if not _same(a, b):
            result.differences.append(f"{name}: {a} -> {b}")
        elif a != b:
            result.exact = False
    return result


def report(source: Path, run_dir: Path) -> Reproduction:
    """Compare, print the verdict, keep it in the new run's ``status.json``."""
    result = compare(source, run_dir)
    rundir.update_status(run_dir, **{STATUS_KEY: result.record()})
    print("\n".join(result.lines()), flush=True)
    return result
