"""Rebuild a trained run from its directory alone and evaluate it again (``evaluate.py``).

Reads the run's saved config, mixture and checkpoint, rebuilds data module and model through the
training pipeline's own builders, and hands the trained VAE to ``report.write_evaluation``.
Every user mistake is a one-line ConfigError; turning it into an exit code is the CLI layer's
job.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from gmm_vae.analysis.report import EVAL_DIR, FIGURES, format_summary, write_evaluation
from gmm_vae.config import check_seed, is_reference
from gmm_vae.errors import ConfigError
from gmm_vae.model.checkpoints import check_weights, read_checkpoint, upgraded_state_dict

if TYPE_CHECKING:
    import torch

    from gmm_vae.data.gmm import GMM

# Checkpoint names ``ckpt=`` accepts besides a path, and the file each one means.
NAMED_CHECKPOINTS = {"last": "last.ckpt", "best": "best.ckpt"}


def evaluate_run(run_dir: str | Path | None, ckpt: str | int | None = "last",
                 n_samples: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """evaluate.py's body: rebuild a run's model from its directory and write ``evaluation/``.

    The model is rebuilt from the checkpoint's own hyper-parameters (as trained, even where a
    setting was added or an auto rule changed since), the config from
    ``<run_dir>/.hydra/config.yaml``, the mixture is rebuilt from it and
    checked against ``<run_dir>/gmm.yaml`` (the file wins if they differ, since it is what the
    run trained on), and the checkpoint is read with ``weights_only=True`` so a checkpoint from
    elsewhere cannot run code. ``n_samples=None`` and ``seed=None`` mean the run's
    ``analysis.eval_samples`` and ``seed``: with ``ckpt=last`` that reproduces the evaluation
    training ended with, number for number. Every user mistake is a one-line ConfigError.
    """
    if run_dir is None or str(run_dir).strip() == "":
        raise ConfigError("run_dir is required: python evaluate.py run_dir=<a train.py run "
                          "directory>")
    if n_samples is not None and (not isinstance(n_samples, int) or isinstance(n_samples, bool)
                                  or n_samples < 1):
        raise ConfigError(f"n_samples must be a positive integer (got {n_samples!r})")
    if seed is not None:
        check_seed(seed, "seed")
    run_dir = Path(str(run_dir)).expanduser()
    cfg = load_run_config(run_dir)
    n = int(cfg.analysis.eval_samples) if n_samples is None else int(n_samples)
    seed = int(cfg.seed) if seed is None else int(seed)
    if is_reference(cfg):
        return _evaluate_reference(run_dir, cfg, ckpt, n, seed)
    ckpt_path, label = resolve_checkpoint(run_dir, ckpt)
    # Only now the heavy imports, so every mistake above is reported at once.
    import torch

    from gmm_vae.runs import pipeline

    state = load_checkpoint(ckpt_path, label)
    if cfg.torch_threads:
        torch.set_num_threads(int(cfg.torch_threads))
    pipeline.quiet_lightning()
    dm = datamodule_for_run(cfg, run_dir)
    # The model the checkpoint recorded (its own hyper-parameters), not today's defaults.
    module = pipeline.build_model(cfg, dm, checkpoint=state)
    load_weights(module, state, label)
    vae = module.vae.eval()
    metrics = write_evaluation(run_dir, vae, dm, cfg, label, n, seed)
    _print_evaluation(run_dir, metrics)
    return metrics


def _evaluate_reference(run_dir: Path, cfg: DictConfig, ckpt: str | int | None,
                        n: int, seed: int) -> dict[str, Any]:
    """``evaluate_run`` for a reference model's run (``model=gaussian_mixture`` /
    ``spline_flow``): its one fitted model, ``checkpoints/reference.pt``."""
    from gmm_vae.runs import reference_run

    if ckpt is not None and str(ckpt).strip() not in ("last", "final"):
        raise ConfigError(f"ckpt={ckpt}: a reference model's run has one fitted model "
                          f"(model={cfg.model.family}); use ckpt=last or leave it out")
    path = run_dir / reference_run.CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"run_dir={run_dir}: {path} not found (the fit did not finish)")
    model = reference_run.load(path)
    metrics = write_evaluation(run_dir, model, datamodule_for_run(cfg, run_dir), cfg, "final",
                               n, seed)
    _print_evaluation(run_dir, metrics)
    return metrics


def _print_evaluation(run_dir: Path, metrics: dict[str, Any]) -> None:
    out = run_dir / EVAL_DIR
    print("\n".join([
        format_summary(metrics),
        f"  report:  {out / 'report.md'}",
        f"  metrics: {out / 'metrics.json'}   samples: {out / 'samples.npy'}",
        f"  figures: {', '.join(str(out / f) for f in FIGURES.values() if (out / f).is_file())}",
    ]), flush=True)


def load_run_config(run_dir: Path, setting: str = "run_dir") -> DictConfig:
    """The run's composed config, on the current schema (so settings added since get defaults).

    ``setting`` is the name the messages give the directory (``rerun`` for a re-run).
    """
    from gmm_vae import config as config_mod

    if not run_dir.is_dir():
        raise ConfigError(f"{setting}={run_dir} does not exist")
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{setting}={run_dir}: not a train.py run directory (no "
                          ".hydra/config.yaml)")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(config_mod.TrainConfig), OmegaConf.load(path))
    except Exception as exc:  # YAML or schema errors: both mean the file cannot be used
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{setting}={run_dir}: .hydra/config.yaml cannot be used ({first})") \
            from None
    config_mod.validate(cfg)  # type: ignore[arg-type]
    return cfg  # type: ignore[return-value]


def resolve_checkpoint(run_dir: Path, ckpt: str | int | None) -> tuple[Path, str]:
    """The checkpoint file ``ckpt`` names, and the label reports show for it.

    ``last`` / ``best`` are the run's own checkpoints; anything else is a path, tried as given
    and then relative to the run directory.
    """
    value = "" if ckpt is None else str(ckpt).strip()
    if value in NAMED_CHECKPOINTS:
        path = run_dir / "checkpoints" / NAMED_CHECKPOINTS[value]
        if path.is_file():
            return path, value
        found = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
        hint = (f"found {', '.join(found)} in its checkpoints/; pass ckpt=<path>" if found
                else "the run saved no checkpoints (callbacks.checkpoint=false, or it was "
                "stopped before its first epoch ended)")
        raise ConfigError(f"ckpt={value}: {path} not found; {hint}")
    looks_like_path = value.endswith(".ckpt") or "/" in value or os.sep in value
    candidates = [Path(value).expanduser(), run_dir / value] if value else []
    for path in candidates:
        if path.is_file():
            return path, value
    if not looks_like_path:
        raise ConfigError(f"ckpt must be last, best or the path of a .ckpt file (got {value!r})")
    raise ConfigError(f"ckpt={value}: no such checkpoint file")


def load_checkpoint(path: Path, label: str) -> dict[str, Any]:
    """The checkpoint's contents, read with ``weights_only=True`` (tensors and plain data only)."""
    return read_checkpoint(path, f"ckpt={label}: {path}")


def load_weights(model: torch.nn.Module, state: dict[str, Any], label: str) -> None:
    """Load the checkpoint's weights into the training module ``model``, naming the first
    mismatches if it is another model's (either key layout: ``upgraded_state_dict``)."""
    check_weights(model, state, f"ckpt={label}", "the run's config")
    model.load_state_dict(upgraded_state_dict(state["state_dict"]))


def _same_gmm(a: GMM, b: GMM) -> bool:
    return all(x.shape == y.shape and np.allclose(x, y, rtol=1e-9, atol=1e-12)
               for x, y in ((a.means, b.means), (a.covariances, b.covariances),
                            (a.weights, b.weights)))


def datamodule_for_run(cfg: DictConfig, run_dir: Path) -> Any:
    """The run's data module, on exactly the mixture it trained on (``mixture_config``)."""
    from gmm_vae.runs import pipeline

    cfg, dm = _run_mixture(cfg, run_dir)
    return dm if dm is not None else pipeline.build_datamodule(cfg)


def mixture_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """``cfg``, or a copy of it that trains on ``<run_dir>/gmm.yaml``, the mixture the run
    actually used, when ``cfg`` no longer rebuilds it (a spec file edited or moved since)."""
    return _run_mixture(cfg, run_dir)[0]


def _run_mixture(cfg: DictConfig, run_dir: Path) -> tuple[DictConfig, Any]:
    """The config to rebuild the run's data from, and its data module when already built.

    Rebuilt from the config (same seeds, same test points). ``<run_dir>/gmm.yaml`` is the record
    of the mixture actually used: if the rebuild differs, the config is pointed at
    ``gmm.yaml`` instead, with a warning.
    """
    from gmm_vae.data.gmm import GMM
    from gmm_vae.runs import pipeline

    saved_path = run_dir / "gmm.yaml"
    saved = GMM.from_yaml(saved_path) if saved_path.is_file() else None
    try:
        dm = pipeline.build_datamodule(cfg)
    except ConfigError as exc:
        if saved is None:
            raise ConfigError(f"run_dir={run_dir}: cannot rebuild the run's mixture ({exc}) and "
                              "it has no gmm.yaml") from None
        dm, reason = None, str(exc)
    else:
        reason = "it differs from the mixture rebuilt from the run's config"
    if saved is not None and (dm is None or not _same_gmm(dm.gmm, saved)):
        print(f"warning: using {saved_path} ({reason})", file=sys.stderr, flush=True)
        cfg = copy.deepcopy(cfg)  # the caller's config keeps its own spec_path
        cfg.data.spec_path = str(saved_path)
        return cfg, None
    return cfg, dm
