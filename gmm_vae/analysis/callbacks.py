"""Analysis during training: metrics every few epochs, t-SNE figures less often.

Both callbacks act at the end of a training epoch (``on_train_epoch_end`` runs whether or not
validation is on, and after it when it is), on global rank 0 only, and only orchestrate, on the
training module's plain VAE (``pl_module.vae``): ``evaluation.evaluate_model`` computes,
``plots`` draws. They must not change training: every RNG they touch (torch CPU and CUDA,
NumPy's and Python's global ones) is restored afterwards, so a run with analysis has exactly
the weights of the same run without it.

Epoch numbers in logs and file names count completed epochs (1 after the first epoch).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig

from gmm_vae.analysis import plots
from gmm_vae.analysis.evaluation import EvalSettings, evaluate_model, settings_from_cfg
from gmm_vae.analysis.registry import ANALYSIS, shown
from gmm_vae.analysis.report import json_safe, single_threaded
from gmm_vae.io import atomic_write_text
from gmm_vae.model.vae import VAE
from gmm_vae.values import lookup

log = logging.getLogger(__name__)

# The evaluation seed: fixed, so epoch-to-epoch changes come from the model, not the sampling.
ANALYSIS_SEED = 0
# IWAE log-likelihood is the costliest metric; during training it uses at most this many points.
NLL_POINTS = 1000
# Logged scalar -> path in the metrics dict of ``evaluate_model``: the registry's ANALYSIS rows.
ANALYSIS_SCALARS: dict[str, str] = {f"analysis/{m.name}": m.key for m in shown(ANALYSIS)}


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore torch (CPU, CUDA), NumPy and Python global RNG states on exit.

    Training draws its reparameterisation noise from torch's global RNG; anything the analysis
    draws from it would shift every later draw and change the trained weights.
    """
    cpu = torch.random.get_rng_state()
    cuda = (torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized() else None)
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        yield
    finally:
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        np.random.set_state(np_state)
        random.setstate(py_state)


def is_due(trainer: L.Trainer, every_n_epochs: int, include_last: bool) -> bool:
    """Whether the epoch now ending is one to act on (``every_n_epochs=0`` means never)."""
    if every_n_epochs <= 0:
        return False
    epoch = trainer.current_epoch + 1
    if epoch % every_n_epochs == 0:
        return True
    if not include_last:
        return False
    max_epochs = trainer.max_epochs
    last = max_epochs is not None and max_epochs > 0 and epoch >= max_epochs
    return bool(last or trainer.should_stop)


def analysis_scalars(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The logged scalars (``ANALYSIS_SCALARS``) from an ``evaluate_model`` metrics dict.

    A metric that was not computed, or is not finite, is None.
    """
    out: dict[str, float | None] = {}
    for name, path in ANALYSIS_SCALARS.items():
        value = lookup(metrics, path)
        if isinstance(value, bool):  # a verdict (posterior_collapsed) is a 0/1 curve
            value = float(value)
        out[name] = json_safe(value) if isinstance(value, int | float) else None
    # One curve per latent unit: which units carry information, and when they stopped.
    for i, value in enumerate(lookup(metrics, "latent.kl_per_dim") or []):
        out[f"analysis/kl_dim_{i}"] = json_safe(float(value))
    return out


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line, atomically: the file is rewritten whole, never left half-written."""
    old = path.read_text() if path.is_file() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    atomic_write_text(path, old + json.dumps(json_safe(record)) + "\n")


def _datamodule(trainer: L.Trainer) -> Any:
    """The GMM data module the trainer fits on, or None (then the analysis is skipped)."""
    dm = getattr(trainer, "datamodule", None)
    return dm if dm is not None and hasattr(dm, "gmm") and hasattr(dm, "x_test") else None


class AnalysisCallback(L.Callback):
    """Every ``every_n_epochs`` epochs and at the last one: the metrics, logged and kept.

    Scalars (``ANALYSIS_SCALARS``) go to every attached logger at the current global step, and
    one JSON line per analysis (epoch, step, scalars, the full metrics dict) is appended to
    ``<run_dir>/analysis.jsonl``. A failing analysis warns and leaves training running: a
    metric must never cost a long run.
    """

    def __init__(self, settings: EvalSettings, every_n_epochs: int, run_dir: str | Path,
                 seed: int = ANALYSIS_SEED) -> None:
        self.settings = settings
        self.every_n_epochs = int(every_n_epochs)
        self.run_dir = Path(run_dir)
        self.seed = int(seed)
        self.path = self.run_dir / "analysis.jsonl"
        self._truth_cache: dict[str, Any] = {}  # what depends on the ground truth alone

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not is_due(trainer, self.every_n_epochs, True):
            return
        dm = _datamodule(trainer)
        if dm is None:
            log.warning("analysis skipped: the trainer has no GMM data module")
            return
        epoch, step = trainer.current_epoch + 1, trainer.global_step
        try:
            with preserved_rng(), single_threaded():
                ev = evaluate_model(pl_module.vae, dm.gmm, dm.x_test, self.settings,  # type: ignore
                                    seed=self.seed, cache=self._truth_cache)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            log.warning("analysis at epoch %d failed: %s", epoch, message)
            _append_line(self.path, {"epoch": epoch, "step": step, "error": message})
            return
        scalars = analysis_scalars(ev.metrics)
        finite = {k: v for k, v in scalars.items() if v is not None}
        for logger in trainer.loggers:
            logger.log_metrics(finite, step=step)
        _append_line(self.path, {"epoch": epoch, "step": step, **scalars,
                                 "metrics": ev.metrics})


class TSNECallback(L.Callback):
    """Every ``every_n_epochs`` epochs: t-SNE maps of the latent codes and of the samples.

    ``<run_dir>/figures/epoch_XXXX_tsne_latent.png`` (test points' codes coloured by their true
    component) and ``epoch_XXXX_tsne_samples.png`` (VAE vs truth samples), also given to the
    loggers that hold figures as ``tsne/latent`` and ``tsne/samples`` (``log_figure``).
    """

    def __init__(self, every_n_epochs: int, tsne_points: int, run_dir: str | Path,
                 seed: int = ANALYSIS_SEED) -> None:
        self.every_n_epochs = int(every_n_epochs)
        self.tsne_points = int(tsne_points)
        self.run_dir = Path(run_dir)
        self.seed = int(seed)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not is_due(trainer, self.every_n_epochs, False):
            return
        dm = _datamodule(trainer)
        if dm is None:
            log.warning("t-SNE skipped: the trainer has no GMM data module")
            return
        epoch = trainer.current_epoch + 1
        try:
            figures = self._figures(pl_module.vae, dm, epoch)
        except Exception as exc:
            log.warning("t-SNE at epoch %d failed: %s", epoch,
                        f"{type(exc).__name__}: {exc}".splitlines()[0])
            return
        self._publish(trainer, figures, epoch)

    @torch.no_grad()
    def _figures(self, model: VAE, dm: Any, epoch: int) -> dict[str, Any]:
        n = min(self.tsne_points, len(dm.x_test))
        was_training = model.training
        model.eval()
        try:
            with preserved_rng():
                codes = model.embed(torch.from_numpy(np.asarray(dm.x_test[:n]))).cpu().numpy()
                torch.manual_seed(self.seed)
                half = max(1, self.tsne_points // 2)
                samples = model.sample(half).double().cpu().numpy()
                truth, _ = dm.gmm.sample(half, np.random.default_rng([self.seed, 99]))
                title = f"epoch {epoch}"
                return {
                    "latent": plots.tsne_latent(codes, dm.y_test[:n], tsne_points=n,
                                                seed=self.seed, title=title),
                    "samples": plots.tsne_samples_vs_truth(
                        samples, truth, tsne_points=2 * half, seed=self.seed, title=title),
                }
        finally:
            model.train(was_training)

    def _publish(self, trainer: L.Trainer, figures: dict[str, Any], epoch: int) -> None:
        for name, fig in figures.items():
            log_figure(trainer, f"tsne/{name}", fig)
            plots.save_figure(fig, self.run_dir / "figures" / f"epoch_{epoch:04d}_tsne_{name}.png")


def log_figure(trainer: L.Trainer, tag: str, fig: Any) -> None:
    """``fig`` to every attached logger that holds figures, under ``tag`` at the current step.

    TensorBoard: an image summary (its IMAGES tab); MLflow: an artifact
    ``<tag>/step_<step>.png`` of the run; the CSV logger holds no figures.
    """
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger

    step = int(trainer.global_step)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, fig, global_step=step, close=False)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_figure(logger.run_id, fig, f"{tag}/step_{step:06d}.png")


def build_analysis_callbacks(cfg: DictConfig, run_dir: str | Path) -> list[L.Callback]:
    """The analysis callbacks ``cfg.analysis`` turns on (a cadence of 0 turns one off)."""
    a = cfg.analysis
    callbacks: list[L.Callback] = []
    if int(a.every_n_epochs) > 0:
        # No C2ST during training: it trains ten classifiers, the final evaluation's job.
        settings = settings_from_cfg(a, int(a.n_samples), nll_points=NLL_POINTS,
                                     coverage_samples=None, c2st=False)
        callbacks.append(AnalysisCallback(settings, int(a.every_n_epochs), run_dir))
    if int(a.tsne_every_n_epochs) > 0:
        callbacks.append(TSNECallback(int(a.tsne_every_n_epochs), int(a.tsne_points), run_dir))
    return callbacks
