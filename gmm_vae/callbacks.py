"""Lightning callbacks the run attaches: checkpoints, progress bar (and analysis, see below).

Callbacks only orchestrate: the maths lives in ``metrics.py`` and the figures in ``plots.py``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from omegaconf import DictConfig


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[L.Callback]:
    """The callbacks ``cfg.callbacks`` asks for, writing under ``run_dir``."""
    callbacks: list[L.Callback] = []
    if cfg.callbacks.checkpoint:
        callbacks.append(
            ModelCheckpoint(
                dirpath=str(run_dir / "checkpoints"),
                filename="best",
                monitor="val/loss",
                mode="min",
                save_top_k=1,
                save_last=True,
                auto_insert_metric_name=False,
            )
        )
    if cfg.trainer.enable_progress_bar and cfg.callbacks.progress_refresh_rate > 0:
        callbacks.append(TQDMProgressBar(refresh_rate=int(cfg.callbacks.progress_refresh_rate)))
    return callbacks
