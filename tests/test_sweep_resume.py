"""``sweep_resume=true``: a multirun re-launched into its sweep dir skips the jobs that are done,
continues the interrupted ones from ``last.ckpt``, re-runs the failed ones and the ones whose
config changed, and the summary covers every job and says what the launch did with it."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from gmm_vae.errors import RunDirTaken
from gmm_vae.runs import rundir
from gmm_vae.runs.sweep_resume import (
    CONTINUED,
    NEW,
    RERUN,
    RUN_CONFIG,
    SKIPPED,
    config_changes,
    plan_job,
)
from tests.conftest import TINY, compose_config, run_script

# No in-training analysis nor final evaluation, one thread: the cheapest complete jobs.
FAST = ["debug=tiny", "analysis.every_n_epochs=0", "analysis.evaluate_at_end=false",
        "logger=none", "torch_threads=1"]


def _status(job: Path) -> dict:
    return json.loads((job / "status.json").read_text())


def _set_status(job: Path, **status: object) -> None:
    (job / "status.json").write_text(json.dumps(status))


def test_a_relaunched_sweep_skips_continues_and_reruns_and_summarises_every_job(
        tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST, "seed=1,2,3", f"hydra.sweep.dir={sweep}"]
    first = run_script("train.py", args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    # Job 1 as a SIGTERM leaves it (its last.ckpt intact), job 2 as a full disk leaves it.
    _set_status(sweep / "1", status="interrupted", signal="SIGTERM")
    _set_status(sweep / "2", status="failed", error="WriteFailed: could not write x")
    done = _status(sweep / "0")
    ckpts = {j: (sweep / j / "checkpoints" / "last.ckpt").stat().st_mtime_ns
             for j in ("0", "1", "2")}

    again = run_script("train.py", [*args, "sweep_resume=true"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    lines = [line for line in again.stdout.splitlines() if line.startswith("sweep_resume:")]
    assert lines == [
        "sweep_resume: job 0: skipped (completed with the same config)",
        "sweep_resume: job 1: continued (interrupted by SIGTERM; continued from "
        "checkpoints/last.ckpt)",
        "sweep_resume: job 2: re-run (failed: WriteFailed: could not write x)"]
    after = {j: (sweep / j / "checkpoints" / "last.ckpt").stat().st_mtime_ns
             for j in ("0", "1", "2")}
    assert after["0"] == ckpts["0"]  # skipped: not trained again
    assert after["1"] == ckpts["1"]  # continued from its final epoch: nothing left to train
    assert after["2"] != ckpts["2"]  # re-run from scratch
    assert {k: v for k, v in _status(sweep / "0").items() if k != "sweep_resume"} == done
    actions = [_status(sweep / j)["sweep_resume"]["action"] for j in ("0", "1", "2")]
    assert actions == [SKIPPED, CONTINUED, RERUN]
    assert all(_status(sweep / j)["status"] == "completed" for j in ("0", "1", "2"))

    with (sweep / "summary.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["job"], r["seed"], r["status"]) for r in rows] == [
        ("0", "1", "completed"), ("1", "2", "completed"), ("2", "3", "completed")]
    assert [r["launch"].split(":")[0] for r in rows] == [SKIPPED, CONTINUED, RERUN]
    assert "sweep_resume" not in rows[0]  # how it was launched is no setting of the jobs
    md = (sweep / "summary.md").read_text()
    assert "Last launch (`sweep_resume=true`): 1 skipped, 1 continued, 1 re-run." in md


def test_sweep_resume_outside_a_multirun_is_one_line(tmp_path: Path) -> None:
    proc = run_script("train.py", [*TINY, "sweep_resume=true", f"hydra.run.dir={tmp_path / 'r'}"],
                      cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: sweep_resume=true applies to a multirun (python train.py -m ... "
        "hydra.sweep.dir=<the sweep's dir> sweep_resume=true); continue one run with "
        "resume=<run dir>")
    assert not (tmp_path / "r").exists()


def test_sweep_resume_with_overwrite_is_refused_before_any_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_script("train.py", ["-m", *FAST, "seed=1,2", "sweep_resume=true", "overwrite=true",
                                   f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: sweep_resume=true and overwrite=true cannot be combined: sweep_resume keeps "
        "the jobs that are done, overwrite clears them all")
    assert not any(sweep.glob("*/status.json"))


# ------------------------------------------------------------- the rule, on hand-made job dirs


@pytest.fixture(scope="module")
def cfg() -> DictConfig:
    return compose_config([*TINY, "sweep_resume=true"])


def _job(tmp_path: Path, cfg: DictConfig, status: dict | None, *, config: bool = True,
         ckpt: bool = False) -> Path:
    job = tmp_path / "3"
    (job / ".hydra").mkdir(parents=True)
    if status is not None:
        (job / "status.json").write_text(json.dumps(status))
    if config:
        (job / RUN_CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if ckpt:
        (job / "checkpoints").mkdir()
        (job / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    return job


def test_a_job_with_no_results_is_new(tmp_path: Path, cfg: DictConfig) -> None:
    assert plan_job(tmp_path / "0", cfg).action == NEW  # Hydra has not even made it yet
    assert plan_job(_job(tmp_path, cfg, None, config=False), cfg).action == NEW


def test_a_completed_job_with_the_same_config_is_skipped_with_its_objective(
        tmp_path: Path, cfg: DictConfig) -> None:
    job = _job(tmp_path, cfg, {"status": "completed", "objective": 0.75})
    threads = compose_config([*TINY, "sweep_resume=true", "torch_threads=2"])
    plan = plan_job(job, threads)  # threads change speed, not results
    assert (plan.action, plan.reason, plan.objective) == (
        SKIPPED, "completed with the same config", 0.75)


def test_a_job_whose_config_changed_is_rerun_naming_the_change(tmp_path: Path,
                                                                cfg: DictConfig) -> None:
    job = _job(tmp_path, cfg, {"status": "completed", "objective": 0.75})
    longer = compose_config([*TINY, "sweep_resume=true", "trainer.max_epochs=3"])
    plan = plan_job(job, longer)
    assert plan.action == RERUN
    assert plan.reason == "config differs from the run's: trainer.max_epochs: 2 -> 3"


def test_interrupted_or_killed_jobs_continue_from_their_checkpoint_else_rerun(
        tmp_path: Path, cfg: DictConfig) -> None:
    job = _job(tmp_path, cfg, {"status": "interrupted", "signal": "SIGINT"}, ckpt=True)
    plan = plan_job(job, cfg)
    assert (plan.action, plan.reason) == (
        CONTINUED, "interrupted by SIGINT; continued from checkpoints/last.ckpt")
    _set_status(job, status="running")  # SIGKILL: no process holds the lock any more
    assert plan_job(job, cfg).reason == ("its process died while running; continued from "
                                         "checkpoints/last.ckpt")
    (job / "checkpoints" / "last.ckpt").unlink()
    assert plan_job(job, cfg).reason == "its process died while running before its first " \
                                        "checkpoint"
    assert plan_job(job, cfg).action == RERUN


def test_failed_and_unrecorded_jobs_are_rerun(tmp_path: Path, cfg: DictConfig) -> None:
    job = _job(tmp_path, cfg, {"status": "failed", "error": "TrainingDiverged: loss nan"})
    assert plan_job(job, cfg).reason == "failed: TrainingDiverged: loss nan"
    (job / RUN_CONFIG).unlink()  # a run from before run_config.yaml existed
    plan = plan_job(job, cfg)
    assert (plan.action, plan.reason) == (
        RERUN, "failed, with no record of the config it ran with (run_config.yaml)")


def test_a_job_still_running_is_refused(tmp_path: Path, cfg: DictConfig) -> None:
    job = _job(tmp_path, cfg, {"status": "running"}, ckpt=True)
    with rundir.claimed(job, "hydra.run.dir", resuming=True), pytest.raises(RunDirTaken):
        plan_job(job, cfg)


def test_config_changes_ignore_how_a_job_was_launched() -> None:
    old = {"seed": 1, "resume": None, "ckpt_path": None, "model": {"lr": 0.002}}
    new = {"seed": 1, "resume": "/run", "ckpt_path": "/run/last.ckpt", "model": {"lr": 0.01},
           "extra": {"a": 1}}
    assert config_changes(old, new) == ["extra.a: (absent) -> 1", "model.lr: 0.002 -> 0.01"]
