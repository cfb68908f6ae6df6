"""Continuing a run: ``resume=<run dir>`` and extending it with ``trainer.max_epochs=N``.

The run's own config with this command's explicit overrides on top (``resume_config``), the
settings the command line gave (``explicit_overrides``: they, and only they, replace what the
checkpoint recorded, ``pipeline.build_model``), and the rule that a run whose learning rate has
decayed to 0 is finished (``check_extension``). ``pipeline.train`` does the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gmm_vae import config as config_mod
from gmm_vae.errors import ConfigError
from gmm_vae.model.checkpoints import checkpoint_lr_segment


def resume_config(cfg: DictConfig) -> tuple[DictConfig, Path]:
    """The config of the run in ``cfg.resume``, with this command's explicit overrides on top.

    ``python train.py resume=<run_dir> trainer.max_epochs=500`` continues that run in place from
    ``checkpoints/last.ckpt`` with its own settings, extended by the overrides given now. (The
    model itself is rebuilt from the checkpoint's hyper-parameters: ``build_model``.)
    """
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
    with_overrides(resumed, cfg, explicit_overrides())  # type: ignore[arg-type]
    resumed.resume = None
    resumed.ckpt_path = str(last)
    return resumed, run_dir  # type: ignore[return-value]


# Settings that choose which run a command continues or copies: never copied onto that run.
_RUN_SELECTORS = ("resume", "rerun", "ckpt_path")


def with_overrides(saved: DictConfig, cfg: DictConfig, keys: Sequence[str]) -> DictConfig:
    """``saved`` (a run's own config) with this command's values of ``keys`` on top.

    ``keys`` are the settings the command line gave (``explicit_overrides``); the ones that
    select the run (``resume``, ``rerun``, ``ckpt_path``) and Hydra's own are not copied, nor
    is a config group chosen as a whole that is no key of the config (``debug=tiny``: its
    values are already in ``saved``, as the run composed them).
    """
    absent = object()
    for key in keys:
        if key in _RUN_SELECTORS or key.startswith("hydra."):
            continue
        value = OmegaConf.select(cfg, key, default=absent)
        if value is not absent:
            OmegaConf.update(saved, key, value, merge=False)
    return saved


def explicit_overrides() -> list[str]:
    """The settings given on this command line (``key`` of each ``key=value``), if any."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [item.split("=", 1)[0].lstrip("+~") for item in HydraConfig.get().overrides.task]


def check_extension(ckpt: dict[str, Any], cfg: DictConfig) -> None:
    """Refuse to extend a run whose learning rate has already decayed to 0.

    Continuing it would train at lr 0: the weights could not change, only the clock. The rule
    for extensions (``schedules.CosineSegment.extended``) keeps the rate falling, so such a run
    is finished; a longer run is a new one.
    """
    segment = checkpoint_lr_segment(ckpt)
    states = ckpt.get("lr_schedulers") or []
    if segment is None or not states:
        return
    at = int(states[0].get("last_epoch", 0))
    new_end = int(cfg.trainer.max_epochs)
    if new_end > segment.end_epoch and segment.annealed(at):
        raise ConfigError(
            f"trainer.max_epochs={new_end}: the run's learning rate decayed to 0 at epoch "
            f"{segment.end_epoch} (model.lr_schedule=cosine), so more epochs cannot change its "
            f"weights; train a new run with trainer.max_epochs={new_end}")
