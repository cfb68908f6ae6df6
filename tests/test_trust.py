"""Every path a user can take is a product path: the best checkpoint, an extended run, a full
disk, a reused run directory, a signal during validation, sparse validation, the search
objective. Each test here failed on the code before it was written."""

from __future__ import annotations

import errno
import itertools
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from gmm_vae import io as io_mod
from gmm_vae.analysis.search import objective
from gmm_vae.errors import RunDirTaken, RunInterrupted, WriteFailed
from gmm_vae.model.schedules import CosineSegment
from gmm_vae.runs import pipeline, rundir
from tests.conftest import ROOT, TINY, compose_config, run_script

QUIET = ["analysis.every_n_epochs=0", "analysis.evaluate_at_end=false"]


class Recorder(L.Callback):
    """Per epoch: the learning rate and KL weight it trained with, and what validation said."""

    def __init__(self) -> None:
        self.lr: dict[int, float] = {}
        self.kl_weight: dict[int, float] = {}
        self.val: dict[int, dict[str, float]] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.lr[trainer.current_epoch] = float(lr)
        self.kl_weight[trainer.current_epoch] = pl_module.kl_weight()

    def on_validation_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.val[trainer.current_epoch] = {
                k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}


def _with_callbacks(monkeypatch: pytest.MonkeyPatch, *extra: L.Callback) -> None:
    """Make ``pipeline.train`` attach ``extra`` after its own callbacks."""
    original = pipeline.build_callbacks
    monkeypatch.setattr(pipeline, "build_callbacks",
                        lambda cfg, run_dir: [*original(cfg, run_dir), *extra])


def _ckpt(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------ best checkpoint


def test_best_checkpoint_is_the_lowest_beta1_nelbo_not_a_warmup_epoch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """During the KL warm-up val/loss weighs the KL by w < 1 and is lowest in the warm-up; the
    best checkpoint is chosen on val/nelbo = recon + KL, which keeps its meaning."""
    rec = Recorder()
    _with_callbacks(monkeypatch, rec)
    cfg = compose_config([*TINY, *QUIET, "trainer.max_epochs=12", "model.kl_warmup_epochs=12"])
    pipeline.train(cfg, tmp_path)
    for terms in rec.val.values():
        assert terms["val/nelbo"] == pytest.approx(terms["val/recon"] + terms["val/kl"],
                                                   rel=1e-5)
    best_epoch = min(rec.val, key=lambda e: rec.val[e]["val/nelbo"])
    warmup_low = min(rec.val, key=lambda e: rec.val[e]["val/loss"])
    assert warmup_low != best_epoch, "the run does not tell the two monitors apart"
    best = _ckpt(tmp_path / "checkpoints" / "best.ckpt")
    assert best["epoch"] == best_epoch
    state = next(v for k, v in best["callbacks"].items() if "val/nelbo" in k)
    assert state["monitor"] == "val/nelbo"
    assert state["best_model_score"] == pytest.approx(rec.val[best_epoch]["val/nelbo"])


# ---------------------------------------------------------------------- extending a run


def _stop_after(epoch: int) -> L.Callback:
    class StopAfter(L.Callback):
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
            if trainer.current_epoch == epoch:
                trainer.should_stop = True

    return StopAfter()


def test_extending_a_run_keeps_the_learning_rate_falling_and_the_warmups_done(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run of 8 epochs stopped after 4, extended to 24: the rate continues its decay from
    half its base value down to 0 at epoch 24, and the KL warm-up (2 epochs, a third of... the
    original 8, not of 24) is not entered again."""
    base = ["data.n_samples=256", "data.batch_size=128", *QUIET]
    first = Recorder()
    _with_callbacks(monkeypatch, first, _stop_after(3))
    pipeline.train(compose_config([*TINY, *base, "trainer.max_epochs=8"]), tmp_path)
    assert sorted(first.lr) == [0, 1, 2, 3]
    lr0 = 2e-3
    for e, lr in first.lr.items():
        assert lr == pytest.approx(lr0 * 0.5 * (1 + math.cos(math.pi * e / 8)), rel=1e-6)
    last = tmp_path / "checkpoints" / "last.ckpt"
    weights_before = _ckpt(last)["state_dict"]

    second = Recorder()
    _with_callbacks(monkeypatch, second)
    cfg = compose_config([*TINY, *base, "trainer.max_epochs=24", f"ckpt_path={last}"])
    pipeline.train(cfg, tmp_path)
    assert sorted(second.lr) == list(range(4, 24))  # goes on from the checkpoint
    lrs = [second.lr[e] for e in range(4, 24)]
    assert lrs[0] == pytest.approx(lr0 * 0.5, rel=1e-6)  # where the first run stood
    assert all(b <= a for a, b in itertools.pairwise(lrs)), lrs  # never rises
    segment = CosineSegment(4, 0.5, 24)
    for e in range(4, 24):
        assert second.lr[e] == pytest.approx(lr0 * segment.factor(e), rel=1e-6, abs=1e-12)
    assert max(first.lr.values()) == pytest.approx(lr0)
    # Warm-up of the original run (8 // 3 = 2 epochs), not re-derived from 24 (8 epochs).
    assert all(w == 1.0 for w in second.kl_weight.values()), second.kl_weight
    extended = _ckpt(last)
    assert extended["hyper_parameters"]["kl_warmup_epochs"] == 2
    assert extended["epoch"] == 23
    assert any(not torch.equal(weights_before[k], extended["state_dict"][k])
               for k in weights_before)


def test_extending_an_annealed_run_is_refused_in_one_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    tiny = [*TINY, *QUIET, f"hydra.run.dir={run_dir}"]
    assert run_script("train.py", tiny, cwd=tmp_path).returncode == 0
    before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    proc = run_script("train.py", [f"resume={run_dir}", "trainer.max_epochs=5"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: trainer.max_epochs=5: the run's learning rate decayed to 0 at epoch 2 "
        "(model.lr_schedule=cosine), so more epochs cannot change its weights; train a new run "
        "with trainer.max_epochs=5")
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"


def test_cosine_segment_known_values() -> None:
    fresh = CosineSegment(0, 0.0, 300)
    assert fresh.factor(0) == 1.0
    assert fresh.factor(150) == pytest.approx(0.5)
    assert fresh.factor(300) == 0.0 and fresh.factor(400) == 0.0  # never rises past the end
    assert fresh.annealed(300) and not fresh.annealed(299)
    half = fresh.extended(150, 500)
    assert half == CosineSegment(150, 0.5, 500)
    assert half.factor(150) == pytest.approx(0.5)
    assert half.factor(325) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.75)))
    assert half.factor(500) == 0.0
    assert fresh.extended(10, 300) is fresh  # same length: the schedule is unchanged


# ------------------------------------------------------------------------ writes that fail


def _disk_full_at(monkeypatch: pytest.MonkeyPatch, name: str, after: int) -> None:
    """``io``'s writer fails with ENOSPC on ``name`` from its ``after + 1``-th write on."""
    original = io_mod._atomic_write
    seen = {"n": 0}

    def writer(path: Path, data: bytes) -> None:
        if Path(path).name == name:
            seen["n"] += 1
            if seen["n"] > after:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(path, data)

    monkeypatch.setattr(io_mod, "_atomic_write", writer)


def test_a_failed_checkpoint_write_fails_the_run_and_keeps_the_last_good_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _disk_full_at(monkeypatch, "last.ckpt", after=1)
    cfg = compose_config([*TINY, *QUIET, "trainer.max_epochs=3"])
    with pytest.raises(WriteFailed) as info:
        pipeline.train(cfg, tmp_path)
    assert str(info.value) == (f"could not write {tmp_path / 'checkpoints' / 'last.ckpt'}: "
                               "No space left on device")
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "failed" and "No space left on device" in status["error"]
    assert _ckpt(tmp_path / "checkpoints" / "last.ckpt")["epoch"] == 0  # whole, not truncated
    assert not (tmp_path / "evaluation").exists()


def test_a_full_disk_on_the_command_line_is_one_line_exit_1(tmp_path: Path) -> None:
    """A real filesystem too small for the second checkpoint (a 700 kB tmpfs)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(mount)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        run_dir = mount / "run"
        proc = run_script("train.py", ["trainer.max_epochs=2", "data.n_samples=1000",
                                       "trainer.enable_progress_bar=false", *QUIET,
                                       f"hydra.run.dir={run_dir}"], cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert errors and errors[-1].startswith(f"error: could not write {run_dir}/"), \
            proc.stderr[-2000:]
        assert errors[-1].endswith("No space left on device")
        assert "Traceback" not in proc.stderr
        for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
            _ckpt(ckpt)  # each file there is whole
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_missing_last_checkpoint_after_training_fails_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer that swallows its error (Lightning's own did, on a full disk) cannot end in
    ``completed``: the run checks that last.ckpt holds the final step."""
    monkeypatch.setattr(io_mod, "_atomic_write", _skipping_ckpts(io_mod._atomic_write))
    cfg = compose_config([*TINY, *QUIET])
    with pytest.raises(WriteFailed, match=r"last\.ckpt: the file is missing after training"):
        pipeline.train(cfg, tmp_path)
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "failed"


def _skipping_ckpts(original: Any) -> Any:
    def writer(path: Path, data: bytes) -> None:
        if Path(path).suffix != ".ckpt":
            original(path, data)

    return writer


# ------------------------------------------------------------------- one run per directory


def test_a_run_into_a_finished_run_dir_is_refused_and_leaves_it_untouched(
        tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    tiny = [*TINY, *QUIET, f"hydra.run.dir={run_dir}"]
    assert run_script("train.py", tiny, cwd=tmp_path).returncode == 0
    record = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    proc = run_script("train.py", [*tiny, "seed=7"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: hydra.run.dir={run_dir} already holds a run (status: completed); continue it "
        f"with resume={run_dir}, replace it with overwrite=true, or choose another directory")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == record

    proc = run_script("train.py", [*tiny, "seed=7", "overwrite=true"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "seed=7" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 0  # the old run's are gone


def test_a_run_dir_in_use_is_refused_even_with_overwrite(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with rundir.claimed(run_dir, "hydra.run.dir"):
        proc = run_script("train.py", [*TINY, *QUIET, f"hydra.run.dir={run_dir}",
                                       "overwrite=true"], cwd=tmp_path)
        with pytest.raises(RunDirTaken, match=f"in use by a running run \\(pid {os.getpid()}\\)"):
            rundir.check_free(run_dir, "hydra.run.dir")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: hydra.run.dir={run_dir} is in use by a running run "
                                   f"(pid {os.getpid()}); wait for it to end or choose another "
                                   "directory")
    assert not (run_dir / "status.json").exists()


def test_a_file_as_run_dir_is_one_line(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    proc = run_script("train.py", [*TINY, *QUIET, f"hydra.run.dir={target}"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: hydra.run.dir={target} is a file, not a directory: "
                                   "give the path of a new (or empty) directory for the run")
    assert target.read_text() == "mine"


def test_two_runs_started_together_get_their_own_default_dirs(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    args = [sys.executable, str(ROOT / "train.py"), *TINY, *QUIET]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=240) == 0, p.stderr.read() if p.stderr else ""
    runs = sorted(tmp_path.glob("outputs/*/*"))
    assert len(runs) == 2, runs
    for run in runs:
        assert json.loads((run / "status.json").read_text())["status"] == "completed"
        assert len(list((run / "checkpoints").glob("*.ckpt"))) == 2


def test_a_sweep_into_a_finished_sweep_dir_is_refused(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, *QUIET, "seed=1,2", f"hydra.sweep.dir={sweep}"]
    assert run_script("train.py", args, cwd=tmp_path).returncode == 0
    before = (sweep / "0" / "status.json").read_text()
    proc = run_script("train.py", args, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: hydra.sweep.dir={sweep} already holds a sweep (job 0: completed); finish it "
        "with sweep_resume=true, replace it with overwrite=true, or choose another directory")
    assert (sweep / "0" / "status.json").read_text() == before


# ------------------------------------------------------------------- callback order


def test_a_signal_during_validation_keeps_the_epoch_it_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM while epoch 1 validates: that epoch is finished and checkpointed, then the run
    stops (before: Lightning's handler stopped inside validation, and last.ckpt was epoch 0)."""

    class TermDuringValidation(L.Callback):
        def on_validation_batch_end(self, trainer: L.Trainer, *args: Any, **kw: Any) -> None:
            if trainer.current_epoch == 1 and not trainer.sanity_checking:
                os.kill(os.getpid(), signal.SIGTERM)

    _with_callbacks(monkeypatch, TermDuringValidation())
    cfg = compose_config([*TINY, *QUIET, "trainer.max_epochs=5", "data.n_val=256"])
    with pytest.raises(RunInterrupted):
        pipeline.train(cfg, tmp_path)
    last = _ckpt(tmp_path / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 1
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "interrupted" and status["signal"] == "SIGTERM"


def test_sparse_validation_still_checkpoints_every_epoch_after_the_refit(
        tmp_path: Path) -> None:
    """check_val_every_n_epoch=2 on a 3-epoch run: last.ckpt is the last epoch's, written
    after its prior refit (before: saved after validation only, epoch 1, pre-refit)."""
    cfg = compose_config([*TINY, *QUIET, "trainer.max_epochs=3",
                          "trainer.check_val_every_n_epoch=2", "model.prior_refit_every=1"])
    dm = pipeline.build_datamodule(cfg)
    model = pipeline.build_model(cfg, dm)
    captured: dict[str, torch.Tensor] = {}

    class AfterFit(L.Callback):
        def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
            captured.update({k: v.detach().clone() for k, v in pl_module.state_dict().items()
                             if k.startswith("prior.")})

    trainer = pipeline.build_trainer(cfg, tmp_path, [*pipeline.build_callbacks(cfg, tmp_path),
                                                     AfterFit()])
    trainer.fit(model, datamodule=dm)
    last = _ckpt(tmp_path / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 2 and last["global_step"] == trainer.global_step
    for k, v in captured.items():
        torch.testing.assert_close(last["state_dict"][k], v, rtol=0, atol=0)


# --------------------------------------------------------------------------- the objective


def _evaluation(captured: int = 4, k: int = 4, tv: Any = 0.01, gap: Any = 0.02) -> dict:
    return {"coverage": {"modes_captured": captured, "n_components": k, "weights_tv": tv},
            "nll": {"gap": gap}}


def test_objective_known_values() -> None:
    assert objective(_evaluation()) == pytest.approx(1 - 0.01 - 0.02)
    assert objective(_evaluation(captured=3)) == pytest.approx(0.75 - 0.03)
    # A negative gap (IWAE noise) is no reward.
    assert objective(_evaluation(gap=-0.5)) == pytest.approx(0.99)


@pytest.mark.parametrize("broken", [
    _evaluation(gap=None), _evaluation(gap=float("nan")), _evaluation(gap=float("inf")),
    _evaluation(tv=None), _evaluation(tv=float("nan")), _evaluation(k=0),
    {"coverage": {"modes_captured": 4, "n_components": 4, "weights_tv": 0.0}}, {}, None,
], ids=["gap-null", "gap-nan", "gap-inf", "tv-null", "tv-nan", "k-0", "no-nll", "empty", "none"])
def test_objective_is_nan_when_a_term_is_missing_or_not_finite(broken: Any) -> None:
    assert math.isnan(objective(broken))


# ------------------------------------------------------------------------------ older runs


def test_an_older_run_is_rebuilt_from_what_its_checkpoint_recorded(tmp_path: Path) -> None:
    """A run written before ``model.decoder_covariance`` existed (trained with the diagonal
    head, no such key in its config or checkpoint) is evaluated as the model it was, not as
    today's default (the full-covariance head), and reproduces its own final evaluation."""
    from omegaconf import OmegaConf

    from gmm_vae.runs.rerun import evaluate_run

    run_dir = tmp_path / "run"
    cfg = compose_config([*TINY, "analysis.every_n_epochs=0", "model.decoder_covariance=diag"])
    pipeline.train(cfg, run_dir)
    final = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    saved = OmegaConf.to_container(cfg)
    del saved["model"]["decoder_covariance"]  # type: ignore[index]
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(saved), run_dir / ".hydra" / "config.yaml")
    last = run_dir / "checkpoints" / "last.ckpt"
    state = _ckpt(last)
    del state["hyper_parameters"]["decoder_covariance"]
    torch.save(state, last)
    again = evaluate_run(run_dir, "last")
    assert again["coverage"]["weights_tv"] == final["coverage"]["weights_tv"]
    assert again["nll"]["gap"] == final["nll"]["gap"]


def test_resume_with_overrides_takes_them_and_keeps_the_rest_of_the_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``resume=<dir> trainer.max_epochs=12 model.lr=0.001`` on a run stopped at epoch 4 of 8:
    the new rate is used, the warm-up lengths stay those of the 8-epoch run."""
    from omegaconf import OmegaConf

    run_dir = tmp_path / "run"
    cfg = compose_config([*TINY, *QUIET, "data.n_samples=256", "trainer.max_epochs=8"])
    _with_callbacks(monkeypatch, _stop_after(3))
    pipeline.train(cfg, run_dir)
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    proc = run_script("train.py", [f"resume={run_dir}", "trainer.max_epochs=12",
                                   "model.lr=0.001"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-1500:]
    last = _ckpt(run_dir / "checkpoints" / "last.ckpt")
    assert last["epoch"] == 11
    hp = last["hyper_parameters"]
    assert hp["lr"] == 0.001
    assert (hp["kl_warmup_epochs"], hp["decoder_var_warmup_epochs"]) == (2, 1)  # of 8, not 12
    assert last["lr_segment"] == {"start_epoch": 4, "start_phase": 0.5, "end_epoch": 12}
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
