"""Lightning callbacks the run attaches: checkpoints, progress bar, NaN guard, RNG state.

Callbacks only orchestrate: the maths lives in ``metrics.py`` and the figures in ``plots.py``
(the analysis callbacks are in ``analysis_callbacks.py``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from omegaconf import DictConfig

from gmm_vae.errors import TrainingDiverged

__all__ = ["NaNGuard", "RNGState", "TrainingDiverged", "build_callbacks"]


class NaNGuard(L.Callback):
    """Stop at the first non-finite training loss, before a checkpoint can store bad weights.

    Raising (rather than ``trainer.should_stop``) skips the end-of-epoch checkpoint, so
    ``checkpoints/last.ckpt`` keeps the last good weights, and the run is marked failed.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None or bool(torch.isfinite(loss.detach()).all()):
            return
        lr = pl_module.hparams.get("lr")
        ckpt = trainer.checkpoint_callback
        last = Path(ckpt.dirpath) / "last.ckpt" if ckpt is not None and ckpt.dirpath else None
        kept = (f"the last good weights are in {last}" if last is not None and last.is_file()
                else "no checkpoint had been written yet")
        raise TrainingDiverged(
            f"training loss became {loss.item()} at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step} (batch {batch_idx}); likely cause: model.lr={lr} is too "
            f"high for this model — lower model.lr or set trainer.gradient_clip_val; {kept}"
        )


class RNGState(L.Callback):
    """Save every RNG's state in checkpoints and restore it when training resumes.

    Lightning restores weights, optimiser and loop counters but not the global RNGs that the
    reparameterisation draws from. The state is re-applied at the start of the first resumed
    epoch (after Lightning's sanity check, which would otherwise consume it), so a resumed run
    continues exactly as the uninterrupted one would have.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        # Tensors and plain numbers only, so checkpoints load with weights_only=True.
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        version, internal, gauss_next = random.getstate()
        state: dict[str, Any] = {
            "torch": torch.random.get_rng_state(),
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": {"version": version, "internal": list(internal),
                       "gauss_next": gauss_next},
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.random.set_rng_state(state["torch"])
        npst = state["numpy"]
        np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                             npst["has_gauss"], npst["cached"]))
        py = state["python"]
        random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[L.Callback]:
    """The callbacks ``cfg.callbacks`` and ``cfg.analysis`` ask for, writing under ``run_dir``."""
    callbacks: list[L.Callback] = []
    if cfg.callbacks.nan_guard:
        callbacks.append(NaNGuard())
    callbacks.append(RNGState())
    if cfg.callbacks.checkpoint:
        ckpt_dir = str(run_dir / "checkpoints")
        # Two callbacks, because Lightning 2.6 writes save_last=True only when the top-k file
        # was written in the same step: last.ckpt would go stale whenever val/loss did not
        # improve, and resume would restart from an older epoch.
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/loss",
                                         mode="min", save_top_k=1, save_last=False,
                                         auto_insert_metric_name=False,
                                         enable_version_counter=False))
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None,
                                         save_top_k=1, save_last=False,
                                         enable_version_counter=False))
    if cfg.trainer.enable_progress_bar and cfg.callbacks.progress_refresh_rate > 0:
        callbacks.append(TQDMProgressBar(refresh_rate=int(cfg.callbacks.progress_refresh_rate)))
    from gmm_vae.analysis_callbacks import build_analysis_callbacks

    callbacks.extend(build_analysis_callbacks(cfg, run_dir))
    return callbacks
