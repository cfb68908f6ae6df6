"""Progress on long work: the final evaluation names a slow instrument, the benchmark says how
many runs are done, which are running and how long is left."""

from __future__ import annotations

import importlib.util
import io
import time
from typing import Any

import numpy as np
import pytest

from gmm_vae.analysis import progress
from tests.conftest import ROOT


def test_a_slow_step_is_announced_and_timed_and_a_fast_one_stays_quiet() -> None:
    out = io.StringIO()
    with progress.reporting(after_s=0.05, stream=out):
        progress.begin("coverage")
        time.sleep(0.3)
        progress.begin("distance")  # ends coverage; itself over at once
    lines = out.getvalue().splitlines()
    assert lines[0] == "evaluating: coverage ..."
    assert lines[1].startswith("evaluating: coverage done in ") and lines[1].endswith(" s")
    assert 0.2 <= float(lines[1].split()[-2]) < 5
    assert len(lines) == 2  # distance: nothing


def test_quick_steps_print_nothing_and_begin_outside_reporting_only_times() -> None:
    out = io.StringIO()
    with progress.reporting(after_s=2.0, stream=out):
        for name in ("sampling", "coverage", "modes"):
            progress.begin(name)
    assert out.getvalue() == ""
    before = time.perf_counter()
    assert before <= progress.begin("anything") <= time.perf_counter()


def test_the_evaluation_marks_each_instrument(monkeypatch: pytest.MonkeyPatch) -> None:
    from gmm_vae.analysis.evaluation import EvalSettings, evaluate_model
    from gmm_vae.runs.pipeline import build_datamodule, build_model
    from tests.conftest import TINY, compose_config

    cfg = compose_config(TINY)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    vae = build_model(cfg, dm).vae
    names: list[str] = []

    def begin(name: str) -> float:
        names.append(name)
        return time.perf_counter()

    monkeypatch.setattr(progress, "begin", begin)
    settings = EvalSettings(n_samples=200, cluster_points=100, k_max=3, iwae_samples=2,
                            coverage_samples=None, nd_modes=False)
    evaluate_model(vae, dm.gmm, np.asarray(dm.x_test[:50]), settings)
    assert names == ["sampling", "coverage", "distance", "c2st", "modes", "clusters",
                     "clusters (latent codes)", "likelihood (IWAE)"]


def _fidelity() -> Any:
    spec = importlib.util.spec_from_file_location("fidelity", ROOT / "benchmarks" / "fidelity.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_benchmark_progress_counts_runs_names_the_running_ones_and_estimates_time_left() -> None:
    out = io.StringIO()
    bar = _fidelity().Progress(total=4, jobs=2, stream=out)
    bar.started("ring8/default/0")
    bar.started("ring8/default/1")
    assert bar.eta_s() is None  # nothing finished yet: no estimate
    bar.finished("ring8/default/0", 100.0)
    bar.started("grid25/default/0")
    bar.finished("ring8/default/1", 200.0)
    assert out.getvalue().splitlines() == [
        "fidelity: started ring8/default/0 (run 1 of 4)",
        "fidelity: started ring8/default/1 (run 2 of 4)",
        # 3 runs left at 100 s each, 2 at a time: 150 s.
        "fidelity: 1/4 runs done (ring8/default/0 in 100 s); running: ring8/default/1; "
        "about 2 min 30 s left",
        "fidelity: started grid25/default/0 (run 3 of 4)",
        "fidelity: 2/4 runs done (ring8/default/1 in 200 s); running: grid25/default/0; "
        "about 2 min 30 s left"]
    assert bar.eta_s() == pytest.approx(150.0)  # 2 left at a mean of 150 s, 2 at a time
    assert _fidelity().duration(3900) == "1 h 05 min" and _fidelity().duration(42) == "42 s"
