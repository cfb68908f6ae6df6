"""A reference model's run (``python train.py model=gaussian_mixture`` / ``model=spline_flow``).

The same run directory as a VAE run — ``run_config.yaml``, ``gmm.yaml``, ``status.json``
(running, then completed / failed / interrupted, with the times and the objective), the
``evaluation/`` files by the VAE's own writer — so sweeps, their summaries, ``evaluate.py
run_dir=...``, ``rerun=`` and the fidelity suite treat a reference like any other run. Its
fitted model is ``checkpoints/reference.pt`` (a plain dict, ``references.load_reference``).
There is no Lightning trainer: nothing to log epoch by epoch to TensorBoard (the spline flow
prints its progress on stderr), no checkpoint to resume from.
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from gmm_vae.analysis.search import objective
from gmm_vae.errors import RunInterrupted, WriteFailed
from gmm_vae.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from gmm_vae.model.references import LABELS, Reference, fit_reference, load_reference
from gmm_vae.runs.interrupts import SignalWatch
from gmm_vae.runs.sweep_resume import RUN_CONFIG

CHECKPOINT = Path("checkpoints") / "reference.pt"


def save(model: Reference, path: Path) -> None:
    """``model.state()`` written atomically (a killed write never leaves a partial file)."""
    buffer = io.BytesIO()
    torch.save({"reference": model.state()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load(path: Path) -> Reference:
    """The reference saved at ``path`` (``weights_only``: tensors, lists and numbers only)."""
    return load_reference(torch.load(path, map_location="cpu", weights_only=True)["reference"])


def fit_and_evaluate(cfg: DictConfig, run_dir: Path, watch: SignalWatch, dm: Any,
                     started: float, note: dict[str, Any]) -> float:
    """Fit the reference of ``cfg.model.family``, save it, evaluate it; returns the objective.
    The caller holds the run directory (``rundir.claimed``)."""
    from gmm_vae.analysis.report import format_summary, write_evaluation

    def status(state: str, **extra: Any) -> None:
        atomic_write_json(run_dir / "status.json", {"status": state, "model": cfg.model.family,
                                                    **extra, **note})

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / RUN_CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    status("running")
    try:
        dm.gmm.to_yaml(run_dir / "gmm.yaml")
        # No deferral: a signal ends the fit at once (there is no epoch checkpoint to keep).
        model = fit_reference(cfg.model, dm, int(cfg.trainer.max_epochs), int(cfg.seed))
        save(model, run_dir / CHECKPOINT)
        fit_time = time.perf_counter() - started
        evaluation = None
        if cfg.analysis.evaluate_at_end:
            evaluation = write_evaluation(run_dir, model, dm, cfg, ckpt_label="final",
                                          n_samples=int(cfg.analysis.eval_samples),
                                          seed=int(cfg.seed))
        wall = time.perf_counter() - started
        score = objective(evaluation)
        status("completed", train_time_s=round(fit_time, 2),
               eval_time_s=round(wall - fit_time, 2), wall_time_s=round(wall, 2),
               n_params=int(model.n_params),
               objective=score if math.isfinite(score) else None)
    except BaseException as exc:
        try:
            if watch.received is not None:
                status("interrupted", signal=watch.received)
            else:
                status("failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        except WriteFailed:
            pass  # a full disk: the error that ended the run is the one to report
        if watch.received is not None and not isinstance(exc, RunInterrupted):
            raise RunInterrupted(watch.received) from exc
        raise
    lines = ["", f"Fitted {LABELS[cfg.model.family]} ({model.n_params} parameters): fit "
             f"{fit_time:.1f} s, evaluation {wall - fit_time:.1f} s (total {wall:.1f} s)."]
    if evaluation:
        lines.append(format_summary(evaluation))
    lines += [f"  run dir:     {run_dir}", f"  model:       {run_dir / CHECKPOINT}"]
    print("\n".join(lines), flush=True)
    return score
