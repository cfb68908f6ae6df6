"""train(): config -> data module, model, trainer -> fitted run directory.

The entry points are thin; everything here takes a composed config and a run directory, so tests
can call it directly on configs composed with Hydra's compose API.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from gmm_vae import config as config_mod
from gmm_vae.callbacks import build_callbacks
from gmm_vae.checkpoints import check_weights, read_checkpoint
from gmm_vae.data import GMMDataModule
from gmm_vae.errors import ConfigError, RunInterrupted
from gmm_vae.interrupts import SignalWatch, StopOnSignal
from gmm_vae.io import atomic_write_json
from gmm_vae.model import VAE

log = logging.getLogger(__name__)


def hydra_run_dir() -> Path:
    """The current Hydra job's output directory."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def build_datamodule(cfg: DictConfig) -> GMMDataModule:
    """The data module named by ``cfg.data``; the shuffle order follows the training seed."""
    return GMMDataModule(**OmegaConf.to_container(cfg.data, resolve=True),  # type: ignore[arg-type]
                         shuffle_seed=int(cfg.seed))


def build_model(cfg: DictConfig, dm: GMMDataModule) -> VAE:
    """The VAE of ``cfg.model``, carrying the data module's normaliser."""
    model_kwargs: dict[str, Any] = OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore
    model_kwargs["latent_dim"] = config_mod.resolve_latent_dim(model_kwargs["latent_dim"], dm.dim)
    for key in config_mod.AUTO_EPOCHS:
        model_kwargs[key] = config_mod.resolve_auto_epochs(key, model_kwargs[key],
                                                           int(cfg.trainer.max_epochs))
    return VAE(
        data_dim=dm.dim,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        data_shift=dm.normalizer.shift.tolist(),
        data_scale=dm.normalizer.scale.tolist(),
        **model_kwargs,
    )


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: list[L.Callback]) -> L.Trainer:
    trainer_kwargs: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)  # type: ignore
    # Gradient clipping is done by the model (manual optimisation), not by the Trainer.
    trainer_kwargs.pop("gradient_clip_val", None)
    trainer_kwargs = {k: v for k, v in trainer_kwargs.items() if v is not None}
    logger: Any = False
    if cfg.logger.tensorboard:
        from lightning.pytorch.loggers import TensorBoardLogger

        logger = TensorBoardLogger(save_dir=str(run_dir), name="", version="",
                                   default_hp_metric=False)
    return L.Trainer(default_root_dir=str(run_dir), logger=logger, callbacks=callbacks,
                     enable_checkpointing=bool(cfg.callbacks.checkpoint), **trainer_kwargs)


def write_status(run_dir: Path, status: str, **extra: Any) -> None:
    atomic_write_json(run_dir / "status.json", {"status": status, **extra})


def check_checkpoint(path: Path, setting: str) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) or raise a one-line ConfigError."""
    if not path.is_file():
        raise ConfigError(f"{setting}={path}: no such checkpoint file")
    return read_checkpoint(path, f"{setting}={path}:")


def quiet_lightning() -> None:
    """Silence Lightning's advice that does not apply to in-memory tensor batches."""
    for pattern in (".*does not have many workers.*", ".*number of training batches.*",
                    ".*LeafSpec.*", ".*litlogger.*"):
        warnings.filterwarnings("ignore", message=pattern)


def train(cfg: DictConfig, run_dir: Path | None = None) -> float:
    """Train the VAE of ``cfg``, evaluate it, and leave a complete run directory.

    Returns the run's objective (see ``objective``): higher is better, NaN when unknown.
    Every user mistake (config, spec file, checkpoint) raises ConfigError before the run
    directory holds anything but Hydra's bookkeeping. SIGINT or SIGTERM ends the run with
    ``RunInterrupted``, ``status.json`` = interrupted (with the signal) and an intact
    ``last.ckpt`` to resume from (``gmm_vae/interrupts.py``).
    """
    watch = SignalWatch()
    with watch.installed():
        return _train(cfg, run_dir, watch)


def _train(cfg: DictConfig, run_dir: Path | None, watch: SignalWatch) -> float:
    config_mod.validate(cfg)
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
    started = time.perf_counter()
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    dm = build_datamodule(cfg)  # may raise ConfigError (spec file)
    model = build_model(cfg, dm)
    if cfg.ckpt_path:
        ckpt = check_checkpoint(Path(str(cfg.ckpt_path)), "ckpt_path")
        check_weights(model, ckpt, f"ckpt_path={cfg.ckpt_path}",
                      "the config (model.* settings differ from the run that wrote it)")
    run_dir.mkdir(parents=True, exist_ok=True)
    rank_zero = _is_rank_zero()
    if rank_zero:
        write_status(run_dir, "running")
    try:
        dm.gmm.to_yaml(run_dir / "gmm.yaml")
        trainer = build_trainer(cfg, run_dir, [StopOnSignal(watch),
                                               *build_callbacks(cfg, run_dir)])
        with watch.deferred():
            trainer.fit(model, datamodule=dm, ckpt_path=cfg.ckpt_path)
        watch.raise_if_received()
        train_time = time.perf_counter() - started
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        evaluation: dict[str, Any] | None = None
        if cfg.analysis.evaluate_at_end and trainer.is_global_zero:
            from gmm_vae.report import write_evaluation

            # Lightning moves the model back to the CPU after fit; the evaluation (1M coverage
            # samples, IWAE) runs where training ran.
            model.to(trainer.strategy.root_device)
            evaluation = write_evaluation(run_dir, model, dm, cfg, ckpt_label="final",
                                          n_samples=int(cfg.analysis.eval_samples),
                                          seed=int(cfg.seed))
            log_hparams(trainer, cfg, evaluation)
    except BaseException as exc:
        if watch.received is not None:
            # Lightning may have turned the signal into its own SystemExit (SIGTERMException).
            if rank_zero:
                write_status(run_dir, "interrupted", signal=watch.received,
                             checkpoint=_last_checkpoint(run_dir),
                             resume=f"python train.py resume={run_dir}")
            if isinstance(exc, RunInterrupted):
                raise
            raise RunInterrupted(watch.received) from exc
        if rank_zero:
            write_status(run_dir, "failed",
                         error=f"{type(exc).__name__}: {exc}".splitlines()[0])
        raise
    wall = time.perf_counter() - started
    # Training: from seeding to the end of fit (data, model, trainer set-up included); the
    # evaluation: the rest (final evaluation, its files and figures).
    times = {"train_time_s": round(train_time, 2), "eval_time_s": round(wall - train_time, 2),
             "wall_time_s": round(wall, 2)}
    score = objective(evaluation)
    if trainer.is_global_zero:
        latent = (evaluation or {}).get("latent") or {}
        verdict = {"posterior_collapsed": latent["collapsed"], "latent": latent["verdict"]} \
            if "collapsed" in latent else {}
        write_status(run_dir, "completed", **times, final_metrics=metrics,
                     objective=score if math.isfinite(score) else None, **verdict)
    if trainer.is_global_zero:
        # ddp_spawn trains in child processes: the parent's trainer never advanced its epoch.
        epochs = int(trainer.current_epoch) or int(cfg.trainer.max_epochs)
        print_summary(run_dir, metrics, wall, epochs, evaluation, train_time=train_time)
    return score


def _last_checkpoint(run_dir: Path) -> str | None:
    """``checkpoints/last.ckpt`` if it exists: what ``resume`` continues from."""
    last = run_dir / "checkpoints" / "last.ckpt"
    return str(last) if last.is_file() else None


def _is_rank_zero() -> bool:
    """True in the process that owns the run dir (Lightning sets these in DDP children)."""
    return all(int(os.environ.get(v, "0")) == 0 for v in ("LOCAL_RANK", "NODE_RANK", "RANK"))


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


HPARAM_KEYS = ("data.n_components", "data.dim", "data.seed", "data.n_samples",
               "model.latent_dim", "model.likelihood", "model.decoder_covariance",
               "model.prior", "model.beta",
               "model.lr", "model.prior_components", "trainer.max_epochs", "seed")


def log_hparams(trainer: L.Trainer, cfg: DictConfig, evaluation: dict[str, Any]) -> None:
    """Hyper-parameters beside the final metrics, for TensorBoard's HPARAMS tab in sweeps."""
    from lightning.pytorch.loggers import TensorBoardLogger

    if not isinstance(trainer.logger, TensorBoardLogger):
        return
    params = {k: OmegaConf.select(cfg, k) for k in HPARAM_KEYS}
    params["model.hidden_dims"] = str(list(cfg.model.hidden_dims))
    params["model.latent_dim"] = int(trainer.lightning_module.latent_dim)  # resolved if auto
    cov, nll = evaluation.get("coverage", {}), evaluation.get("nll", {})
    metrics = {"hp/modes_captured": cov.get("modes_captured"), "hp/hq_ratio": cov.get("hq_ratio"),
               "hp/weights_tv": cov.get("weights_tv"), "hp/nll_gap": nll.get("gap"),
               "hp/active_units": (evaluation.get("latent") or {}).get("active_units"),
               "hp/objective": objective(evaluation)}
    metrics = {k: float(v) for k, v in metrics.items() if v is not None}
    trainer.logger.log_hyperparams(params, metrics)


def objective(evaluation: dict[str, Any] | None) -> float:
    """One number to maximise in a search: share of modes captured minus the errors.

    ``modes_captured / K - weights_tv - max(nll_gap, 0)``: 1 for a perfect model; each missed
    mode costs 1/K, each nat of likelihood gap costs 1. Both coverage terms are judged against
    a perfect sampler over all samples drawn, so a collapsed or barely trained model scores
    near or below 0 (it cannot earn modes with stray samples). NaN without an evaluation.
    """
    if not evaluation:
        return float("nan")
    cov, nll = evaluation.get("coverage", {}), evaluation.get("nll", {})
    try:
        score = (cov["modes_captured"] / cov["n_components"] - cov["weights_tv"]
                 - max(float(nll.get("gap") or 0.0), 0.0))
    except (KeyError, TypeError, ZeroDivisionError):
        return float("nan")
    return float(score)


def print_summary(run_dir: Path, metrics: dict[str, float], wall: float, epochs: int,
                  evaluation: dict[str, Any] | None = None,
                  train_time: float | None = None) -> None:
    """A few lines a user reads at the end of a run: losses, where things are, what to do next.

    The time is split into training and the final evaluation, so a speed-up of one is not
    hidden (or faked) by the other.
    """

    def fmt(key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else f"{value:.4f}"

    lines = [
        "",
        _finished_line(epochs, wall, train_time),
        f"  train: loss {fmt('train/loss')}  recon {fmt('train/recon')}  kl {fmt('train/kl')}",
        f"  val:   loss {fmt('val/loss')}  recon {fmt('val/recon')}  kl {fmt('val/kl')}",
    ]
    if evaluation:
        from gmm_vae.report import format_summary

        lines.append(format_summary(evaluation))
    lines += [
        f"  run dir:     {run_dir}",
        f"  checkpoints: {run_dir / 'checkpoints'}",
        f"  TensorBoard: tensorboard --logdir {run_dir}",
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


def resume_config(cfg: DictConfig) -> tuple[DictConfig, Path]:
    """The config of the run in ``cfg.resume``, with this command's explicit overrides on top.

    ``python train.py resume=<run_dir> trainer.max_epochs=500`` continues that run in place from
    ``checkpoints/last.ckpt`` with its own settings, extended by the overrides given now.
    """
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(str(cfg.resume)).expanduser()
    saved_cfg = run_dir / ".hydra" / "config.yaml"
    last = run_dir / "checkpoints" / "last.ckpt"
    if not run_dir.is_dir():
        raise ConfigError(f"resume={cfg.resume}: no such run directory")
    if not saved_cfg.is_file():
        raise ConfigError(f"resume={cfg.resume}: not a train.py run directory (no "
                          ".hydra/config.yaml)")
    if not last.is_file():
        raise ConfigError(f"resume={cfg.resume}: no checkpoints/last.ckpt to resume from")
    resumed = OmegaConf.merge(OmegaConf.structured(config_mod.TrainConfig),
                              OmegaConf.load(saved_cfg))
    overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key in ("resume", "ckpt_path") or key.startswith("hydra."):
            continue
        OmegaConf.update(resumed, key, OmegaConf.select(cfg, key), merge=False)
    resumed.resume = None
    resumed.ckpt_path = str(last)
    return resumed, run_dir  # type: ignore[return-value]
