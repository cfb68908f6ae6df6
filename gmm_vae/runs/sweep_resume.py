"""``sweep_resume=true``: a multirun re-launched into its sweep dir finishes what is left.

``python train.py -m <the same grid> hydra.sweep.dir=<dir> sweep_resume=true`` runs every job
again, and each job, at its start, decides what to do with what its directory holds
(``plan_job``):

- ``completed`` with the same config: **skipped**, its results stand (the objective it recorded
  is what the job returns);
- ``interrupted``, or ``running`` with no live process behind it (killed hard), same config,
  with a ``checkpoints/last.ckpt``: **continued** from it, as ``resume=<job dir>`` would;
- ``failed``, interrupted before its first checkpoint, unreadable: **re-run** from scratch;
- a different config than the one it ran with: **re-run** from scratch, never reused, and the
  settings that changed are named;
- nothing there yet: a **new** job.

The comparison is with ``run_config.yaml``, the config the run recorded itself: Hydra rewrites
the job's ``.hydra/`` before the job starts, so by then it describes the new launch, not the
results. The decision is kept in ``status.json`` (``sweep_resume``) and shown by the sweep's
summary. Job dirs are matched by job number, so this is for a grid (Hydra's basic sweeper,
whose job list is the same for the same command line); a search that draws new trials gets new
configs, which are re-run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gmm_vae.errors import RunDirTaken
from gmm_vae.runs import rundir

# The config a run recorded itself (``pipeline.train`` writes it when the run starts).
RUN_CONFIG = "run_config.yaml"
STATUS_KEY = "sweep_resume"
NEW, SKIPPED, CONTINUED, RERUN = "new", "skipped", "continued", "re-run"
# Settings that say how a job was launched, not what it computes: a change in them is no
# change of the run (a continued run records its checkpoint in ckpt_path). Threads change speed
# and the order of float sums (the last digits of a 300-epoch run: status.json records the
# count), not what the job computes: a finished job is kept when only they changed.
LAUNCH_SETTINGS = ("resume", "rerun", "ckpt_path", "overwrite", "sweep_resume", "torch_threads")


@dataclass(frozen=True)
class JobPlan:
    """What a re-launched job does with its directory, and why (one line for the user)."""

    action: str
    reason: str
    objective: float | None = None

    def note(self) -> dict[str, str]:
        """What ``status.json`` keeps of the decision."""
        return {"action": self.action, "reason": self.reason}

    def line(self, job_dir: Path) -> str:
        return f"sweep_resume: job {job_dir.name}: {self.action} ({self.reason})"


def flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model.lr": 0.002, ...}``: a nested config as dotted keys, lists kept whole."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``["trainer.max_epochs: 2 -> 3", ...]``: the settings whose values differ, launch
    settings (``LAUNCH_SETTINGS``) aside; a key only one side has counts as a change."""
    a, b = flat(old), flat(new)
    changes = []
    for key in sorted(set(a) | set(b)):
        if key in LAUNCH_SETTINGS:
            continue
        if key not in a or key not in b or a[key] != b[key]:
            changes.append(f"{key}: {a.get(key, '(absent)')} -> {b.get(key, '(absent)')}")
    return changes


def recorded_config(job_dir: Path) -> dict[str, Any] | None:
    """The config the job's run recorded (``run_config.yaml``), or None if there is none."""
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(job_dir / RUN_CONFIG), resolve=True)
    except Exception:  # missing, unreadable or not YAML: no usable record either way
        return None
    return loaded if isinstance(loaded, dict) else None  # type: ignore[return-value]


def _status(job_dir: Path) -> dict[str, Any]:
    try:
        status = json.loads((job_dir / "status.json").read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def plan_job(job_dir: Path, cfg: DictConfig) -> JobPlan:
    """What the job in ``job_dir`` does under ``sweep_resume=true`` with its new config ``cfg``.

    Raises ``RunDirTaken`` when a live process still runs in the directory.
    """
    holder = rundir.lock_holder(job_dir) if job_dir.is_dir() else None
    if holder is not None:
        raise RunDirTaken(f"hydra.sweep.dir: job {job_dir.name} is in use by a running run "
                          f"(pid {holder}); wait for it to end")
    state = rundir.previous_status(job_dir)
    if state is None:
        return JobPlan(NEW, "no results yet")
    old = recorded_config(job_dir)
    if old is None:
        return JobPlan(RERUN, f"{state}, with no record of the config it ran with "
                              f"({RUN_CONFIG})")
    changes = config_changes(old, OmegaConf.to_container(cfg, resolve=True))  # type: ignore
    if changes:
        shown = "; ".join(changes[:3]) + (f"; {len(changes) - 3} more" if len(changes) > 3
                                           else "")
        return JobPlan(RERUN, f"config differs from the run's: {shown}")
    status = _status(job_dir)
    if state == "completed":
        objective = status.get("objective")
        return JobPlan(SKIPPED, "completed with the same config",
                       float(objective) if isinstance(objective, int | float) else None)
    has_checkpoint = (job_dir / "checkpoints" / "last.ckpt").is_file()
    if state in ("interrupted", "running"):
        why = (f"interrupted by {status.get('signal', 'a signal')}" if state == "interrupted"
               else "its process died while running")
        if has_checkpoint:
            return JobPlan(CONTINUED, f"{why}; continued from checkpoints/last.ckpt")
        return JobPlan(RERUN, f"{why} before its first checkpoint")
    if state == "failed":
        error = str(status.get("error") or "no message").splitlines()[0]
        return JobPlan(RERUN, f"failed: {error}")
    return JobPlan(RERUN, f"status {state}")


def record_skip(job_dir: Path, plan: JobPlan) -> None:
    """Keep a skipped job's decision in its ``status.json`` (the rest of it stands)."""
    rundir.update_status(job_dir, **{STATUS_KEY: plan.note()})
