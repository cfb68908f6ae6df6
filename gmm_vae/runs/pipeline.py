"""train(): config -> data module, model, trainer -> fitted run directory.

The entry points are thin; everything here takes a composed config and a run directory, so tests
can call it directly on configs composed with Hydra's compose API.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from gmm_vae import config as config_mod
from gmm_vae.analysis.search import objective
from gmm_vae.data.datamodule import GMMDataModule
from gmm_vae.errors import ConfigError, RunInterrupted, WriteFailed
from gmm_vae.io import atomic_write_json, atomic_write_text
from gmm_vae.model.checkpoints import check_weights, read_checkpoint, saved_step
from gmm_vae.model.training import VAEModule
from gmm_vae.runs import loggers, rundir
from gmm_vae.runs.callbacks import AtomicCheckpointIO, build_callbacks
from gmm_vae.runs.interrupts import SignalWatch, StopOnSignal
from gmm_vae.runs.resume import check_extension, explicit_overrides
from gmm_vae.runs.sweep_resume import RUN_CONFIG
from gmm_vae.values import fmt as fmt_value

log = logging.getLogger(__name__)


def hydra_run_dir() -> Path:
    """The current Hydra job's output directory."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def build_datamodule(cfg: DictConfig) -> GMMDataModule:
    """The data module named by ``cfg.data``; the shuffle order follows the training seed."""
    return GMMDataModule(**OmegaConf.to_container(cfg.data, resolve=True),  # type: ignore[arg-type]
                         shuffle_seed=int(cfg.seed))


def model_kwargs(cfg: DictConfig, dm: GMMDataModule) -> dict[str, Any]:
    """The training module's arguments for ``cfg.model`` on ``dm``: auto settings resolved,
    normaliser in."""
    kwargs: dict[str, Any] = OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore
    for key in config_mod.REFERENCE_KEYS:
        kwargs.pop(key, None)
    kwargs["latent_dim"] = config_mod.resolve_latent_dim(kwargs["latent_dim"], dm.dim)
    for key in config_mod.AUTO_EPOCHS:
        kwargs[key] = config_mod.resolve_auto_epochs(key, kwargs[key],
                                                     int(cfg.trainer.max_epochs))
    return {"data_dim": dm.dim, "gradient_clip_val": cfg.trainer.gradient_clip_val,
            "data_shift": dm.normalizer.shift.tolist(),
            "data_scale": dm.normalizer.scale.tolist(), **kwargs}


def build_model(cfg: DictConfig, dm: GMMDataModule, checkpoint: dict[str, Any] | None = None,
                explicit: Sequence[str] = ()) -> VAEModule:
    """The VAE of ``cfg.model`` in its training module, carrying the data module's normaliser.

    With a ``checkpoint`` (resume, evaluate) the model is the one the checkpoint recorded: its
    own hyper-parameters, as resolved when it was trained, so a run written before a setting
    existed, or before an auto rule changed, is rebuilt as it was trained, and an extended run
    keeps its warm-up lengths. Only the settings in ``explicit`` (``model.<key>`` or
    ``trainer.gradient_clip_val``, given on this command line) replace the recorded ones.
    """
    fresh = model_kwargs(cfg, dm)
    recorded = (checkpoint or {}).get("hyper_parameters")
    if not isinstance(recorded, dict):
        return VAEModule(**fresh)
    accepted = set(inspect.signature(VAEModule.__init__).parameters) - {"self"}
    kwargs = {k: v for k, v in recorded.items() if k in accepted}
    for key in explicit:
        name = key.split(".", 1)[-1]
        if (key.startswith("model.") or key == "trainer.gradient_clip_val") and name in fresh:
            kwargs[name] = fresh[name]
    return VAEModule(**kwargs)


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: list[L.Callback]) -> L.Trainer:
    trainer_kwargs: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)  # type: ignore
    # Gradient clipping is done by the model (manual optimisation), not by the Trainer.
    trainer_kwargs.pop("gradient_clip_val", None)
    trainer_kwargs = {k: v for k, v in trainer_kwargs.items() if v is not None}
    return L.Trainer(default_root_dir=str(run_dir),
                     logger=loggers.build_loggers(cfg, run_dir) or False, callbacks=callbacks,
                     enable_checkpointing=bool(cfg.callbacks.checkpoint),
                     plugins=[AtomicCheckpointIO()], **trainer_kwargs)


def write_status(run_dir: Path, status: str, **extra: Any) -> None:
    atomic_write_json(run_dir / "status.json", {"status": status, **extra})


def check_checkpoint(path: Path, setting: str) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) or raise a one-line ConfigError."""
    if not path.is_file():
        raise ConfigError(f"{setting}={path}: no such checkpoint file")
    return read_checkpoint(path, f"{setting}={path}:")


def quiet_lightning() -> None:
    """Silence Lightning's advice that does not apply to in-memory tensor batches."""
    # best.ckpt's monitor exists only on validation epochs (trainer.check_val_every_n_epoch).
    for pattern in (".*does not have many workers.*", ".*number of training batches.*",
                    ".*LeafSpec.*", ".*litlogger.*",
                    r".*ModelCheckpoint\(monitor='val/nelbo'\) could not find.*"):
        warnings.filterwarnings("ignore", message=pattern)


def train(cfg: DictConfig, run_dir: Path | None = None,
          note: dict[str, Any] | None = None) -> float:
    """Train the VAE of ``cfg``, evaluate it, and leave a complete run directory.

    Returns the run's objective (see ``objective``): higher is better, NaN when unknown.
    Every user mistake (config, spec file, checkpoint) raises ConfigError before the run
    directory holds anything but Hydra's bookkeeping. SIGINT or SIGTERM ends the run with
    ``RunInterrupted``, ``status.json`` = interrupted (with the signal) and an intact
    ``last.ckpt`` to resume from (``gmm_vae/runs/interrupts.py``). ``note`` (how the run was
    launched: a sweep resume's decision, the run a re-run copies) goes into every
    ``status.json`` the run writes.
    """
    watch = SignalWatch()
    with watch.installed():
        return _train(cfg, run_dir, watch, dict(note or {}))


def _train(cfg: DictConfig, run_dir: Path | None, watch: SignalWatch,
           note: dict[str, Any]) -> float:
    config_mod.validate(cfg)
    loggers.check_available(cfg)  # a missing optional package: before the run dir is touched
    strategy = str(cfg.trainer.strategy)
    if (is_multirun() and strategy.startswith("ddp") and not strategy.startswith("ddp_spawn")
            and "SLURM_NTASKS" not in os.environ):
        raise ConfigError(
            f"trainer.strategy={strategy} cannot run inside a multirun (Lightning re-launches "
            "the whole sweep in every process); use trainer.strategy=ddp_spawn, or "
            "hydra/launcher=slurm with tasks_per_node equal to trainer.devices")
    quiet_lightning()
    run_dir = Path(run_dir) if run_dir is not None else hydra_run_dir()
    threads = int(cfg.torch_threads) if cfg.torch_threads else _threads_for_parallel_jobs()
    if threads:
        torch.set_num_threads(threads)
    # Recorded in status.json: the thread count sets the order of float reductions, so it
    # moves a run's last digits (a re-run takes the same count: ``reproduce.rerun_config``).
    note.setdefault("torch_threads", torch.get_num_threads())
    started = time.perf_counter()
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm = build_datamodule(cfg)  # may raise ConfigError (spec file)
    if config_mod.is_reference(cfg):  # a reference model: fitted and judged as a VAE run is
        from gmm_vae.runs import reference_run

        with rundir.claimed(run_dir, "hydra.run.dir", overwrite=bool(cfg.overwrite)):
            return reference_run.fit_and_evaluate(cfg, run_dir, watch, dm, started, note)
    ckpt = None
    if cfg.ckpt_path:
        ckpt = check_checkpoint(Path(str(cfg.ckpt_path)), "ckpt_path")
        check_extension(ckpt, cfg)
    model = build_model(cfg, dm, ckpt, explicit_overrides())
    if ckpt is not None:
        check_weights(model, ckpt, f"ckpt_path={cfg.ckpt_path}",
                      "the config (model.* settings differ from the run that wrote it)")
    rank_zero = rundir.owns_run_dir()
    if not rank_zero:  # a DDP child: the process the user started owns the run dir
        return _fit_and_evaluate(cfg, run_dir, watch, dm, model, started, rank_zero, note)
    # ckpt_path inside the run dir: this run continues the one there (resume).
    resuming = bool(cfg.ckpt_path) and _is_inside(Path(str(cfg.ckpt_path)), run_dir)
    with rundir.claimed(run_dir, "hydra.run.dir" if not resuming else "resume",
                        overwrite=bool(cfg.overwrite), resuming=resuming):
        return _fit_and_evaluate(cfg, run_dir, watch, dm, model, started, rank_zero, note)


def _fit_and_evaluate(cfg: DictConfig, run_dir: Path, watch: SignalWatch, dm: GMMDataModule,
                      model: VAEModule, started: float, rank_zero: bool,
                      note: dict[str, Any]) -> float:
    """Fit, check the checkpoint landed, evaluate; ``status.json`` says how it ended."""
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer: L.Trainer | None = None
    if rank_zero:
        # The config as trained: Hydra's .hydra/config.yaml is rewritten by a re-launched
        # sweep before the job starts, so a sweep resume compares against this record.
        atomic_write_text(run_dir / RUN_CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
        write_status(run_dir, "running", **note)
    try:
        dm.gmm.to_yaml(run_dir / "gmm.yaml")
        trainer = build_trainer(cfg, run_dir, [StopOnSignal(watch),
                                               *build_callbacks(cfg, run_dir)])
        with watch.deferred():
            trainer.fit(model, datamodule=dm, ckpt_path=cfg.ckpt_path)
        watch.raise_if_received()
        if cfg.callbacks.checkpoint and trainer.is_global_zero:
            check_last_checkpoint(run_dir, int(trainer.global_step))
        train_time = time.perf_counter() - started
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        evaluation: dict[str, Any] | None = None
        if cfg.analysis.evaluate_at_end and trainer.is_global_zero:
            from gmm_vae.analysis.report import write_evaluation

            # Lightning moves the model back to the CPU after fit; the evaluation (1M coverage
            # samples, IWAE) runs where training ran.
            model.to(trainer.strategy.root_device)
            evaluation = write_evaluation(run_dir, model.vae, dm, cfg, ckpt_label="final",
                                          n_samples=int(cfg.analysis.eval_samples),
                                          seed=int(cfg.seed))
            loggers.log_final(trainer, cfg, evaluation, run_dir)
        wall = time.perf_counter() - started
        # Training: from seeding to the end of fit (data, model, trainer set-up included); the
        # evaluation: the rest (final evaluation, its files and figures).
        times = {"train_time_s": round(train_time, 2),
                 "eval_time_s": round(wall - train_time, 2), "wall_time_s": round(wall, 2)}
        score = objective(evaluation)
        if trainer.is_global_zero:
            latent = (evaluation or {}).get("latent") or {}
            verdict = {"posterior_collapsed": latent["collapsed"], "latent": latent["verdict"]} \
                if "collapsed" in latent else {}
            write_status(run_dir, "completed", **times, final_metrics=metrics,
                         objective=score if math.isfinite(score) else None, **verdict, **note)
    except BaseException as exc:
        if watch.received is not None:
            # Lightning may have turned the signal into its own SystemExit (SIGTERMException).
            if rank_zero:
                _record(run_dir, "interrupted", signal=watch.received,
                        checkpoint=_last_checkpoint(run_dir),
                        resume=f"python train.py resume={run_dir}", **note)
            loggers.finish(trainer, loggers.KILLED)
            if isinstance(exc, RunInterrupted):
                raise
            raise RunInterrupted(watch.received) from exc
        if rank_zero:
            _record(run_dir, "failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0],
                    **note)
        loggers.finish(trainer, loggers.FAILED)
        raise
    loggers.finish(trainer, loggers.FINISHED)
    if trainer.is_global_zero:
        # ddp_spawn trains in child processes: the parent's trainer never advanced its epoch.
        epochs = int(trainer.current_epoch) or int(cfg.trainer.max_epochs)
        print_summary(run_dir, metrics, wall, epochs, evaluation, train_time=train_time,
                      where=loggers.summary_lines(trainer, cfg, run_dir))
    return score


def _record(run_dir: Path, status: str, **extra: Any) -> None:
    """``status.json`` for a run that ended badly, where it can be written.

    On a full disk the status write fails too: the error that ended the run is the one to
    report, so this one is only logged.
    """
    try:
        write_status(run_dir, status, **extra)
    except WriteFailed as exc:
        log.error("%s (status.json still says running)", exc)


def check_last_checkpoint(run_dir: Path, global_step: int) -> None:
    """``last.ckpt`` holds the final step, or the run fails naming what went wrong.

    Every write goes through ``AtomicCheckpointIO``, which raises on failure; this checks the
    result itself, so no path (a writer swallowing an error, a file removed under the run)
    can end in ``completed`` without the checkpoint a resume or an evaluation needs.
    """
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise WriteFailed(f"could not write {last}: the file is missing after training")
    step = saved_step(last)
    if step != global_step:
        raise WriteFailed(f"could not write {last}: it holds step {step}, training ended at "
                          f"step {global_step}")


def _is_inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError:
        return False
    return True


def _last_checkpoint(run_dir: Path) -> str | None:
    """``checkpoints/last.ckpt`` if it exists: what ``resume`` continues from."""
    last = run_dir / "checkpoints" / "last.ckpt"
    return str(last) if last.is_file() else None


def _threads_for_parallel_jobs() -> int | None:
    """Split the cores between the jobs of a parallel launcher, so they do not fight.

    Under ``hydra/launcher=joblib`` with ``n_jobs`` jobs at once each job gets
    ``cpu_count // n_jobs`` threads (at least 1); elsewhere torch's default stands.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().launcher
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return None
    cpus = os.cpu_count() or 1
    n_jobs = int(launcher.get("n_jobs", -1) or -1)
    n_jobs = cpus if n_jobs < 0 else n_jobs
    return max(1, cpus // max(1, n_jobs))


def print_summary(run_dir: Path, metrics: dict[str, float], wall: float, epochs: int,
                  evaluation: dict[str, Any] | None = None,
                  train_time: float | None = None, where: Sequence[str] = ()) -> None:
    """A few lines a user reads at the end of a run: losses, where things are, what to do next.

    The time is split into training and the final evaluation, so a speed-up of one is not
    hidden (or faked) by the other.
    """

    def fmt(key: str) -> str:
        return fmt_value(metrics.get(key), 4)

    lines = [
        "",
        _finished_line(epochs, wall, train_time),
        f"  train: loss {fmt('train/loss')}  recon {fmt('train/recon')}  kl {fmt('train/kl')}",
        f"  val:   loss {fmt('val/loss')}  recon {fmt('val/recon')}  kl {fmt('val/kl')}",
    ]
    if evaluation:
        from gmm_vae.analysis.report import format_summary

        lines.append(format_summary(evaluation))
    lines += [
        f"  run dir:     {run_dir}",
        f"  checkpoints: {run_dir / 'checkpoints'}",
        *where,
    ]
    print("\n".join(lines), flush=True)


def _finished_line(epochs: int, wall: float, train_time: float | None) -> str:
    """``Finished N epochs: training X s, evaluation Y s (total Z s).``"""
    if train_time is None:
        return f"Finished {epochs} epochs in {wall:.1f} s."
    return (f"Finished {epochs} epochs: training {train_time:.1f} s, evaluation "
            f"{wall - train_time:.1f} s (total {wall:.1f} s).")


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
