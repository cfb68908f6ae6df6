"""Lightning callbacks the run attaches: checkpoints, progress bar, NaN guard, RNG state.

Callbacks only orchestrate: the maths lives in ``analysis/metrics.py`` and the figures in
``analysis/plots.py`` (the analysis callbacks are in ``analysis/callbacks.py``).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig

from gmm_vae.errors import TrainingDiverged
from gmm_vae.io import atomic_write_bytes

# What best.ckpt minimises: the validation negative ELBO at beta = 1, in nats.
BEST_MONITOR = "val/nelbo"

__all__ = ["BEST_MONITOR", "AtomicCheckpointIO", "NaNGuard", "RNGState", "TrainingDiverged",
           "build_callbacks"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, through ``io.atomic_write_bytes`` (temp file + rename).

    Lightning's own writer streams into the final path: on a full disk it left a truncated
    ``last.ckpt``. Here the previous file stays whole and ``WriteFailed`` names the file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        import io

        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        atomic_write_bytes(Path(path), buf.getvalue())


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
        # was written in the same step: last.ckpt would go stale whenever the monitored value
        # did not improve, and resume would restart from an older epoch. Both save at the end
        # of the training epoch, after the module's epoch-end hook (learning-rate step, prior
        # refit): left to Lightning, with trainer.check_val_every_n_epoch != 1 they save after
        # validation instead, before that hook, and not at all on epochs without validation.
        # best.ckpt: the lowest val/nelbo (recon + KL at beta = 1), whose meaning does not
        # change during the KL warm-up as val/loss's does.
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=BEST_MONITOR,
                                         mode="min", save_top_k=1, save_last=False,
                                         auto_insert_metric_name=False,
                                         enable_version_counter=False,
                                         save_on_train_epoch_end=True))
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None,
                                         save_top_k=1, save_last=False,
                                         enable_version_counter=False,
                                         save_on_train_epoch_end=True))
    if cfg.trainer.enable_progress_bar and cfg.callbacks.progress_refresh_rate > 0:
        callbacks.append(TQDMProgressBar(refresh_rate=int(cfg.callbacks.progress_refresh_rate)))
    from gmm_vae.analysis.callbacks import build_analysis_callbacks

    callbacks.extend(build_analysis_callbacks(cfg, run_dir))
    return callbacks
