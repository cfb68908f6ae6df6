"""The project from Python (a notebook), on the command line's own code path.

``train(["data.n_components=8"])`` composes ``conf/train.yaml`` with Hydra's compose API, exactly
as ``python train.py data.n_components=8`` does, validates it, trains in a fresh run directory
and returns a ``Run``: its directory, status, final metrics, the trained VAE (a plain
``torch.nn.Module``) and the mixture. ``load_run(dir)`` opens a finished run, ``evaluate(run)``
judges it again (``python evaluate.py``'s body). A mistake in the settings raises
``ConfigError`` with the line the command would print; nothing here calls ``sys.exit``.
``judge(samples, gmm)`` scores samples from anywhere (``gmm_vae.judge``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gmm_vae.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from omegaconf import DictConfig

    from gmm_vae.data.gmm import GMM
    from gmm_vae.model.vae import VAE

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """The config ``python train.py <overrides>`` would run, validated; ConfigError if not."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from gmm_vae.cli import user_error_message
    from gmm_vae.config import validate

    if GlobalHydra.instance().is_initialized():  # e.g. a notebook that composed before
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides),
                                return_hydra_config=False)
    except Exception as exc:
        message = user_error_message(exc)
        if message is None:
            raise
        raise ConfigError(message) from None
    if config_name == "train":
        validate(cfg)
    return cfg


@dataclass
class Run:
    """A train.py run directory, read back: what a notebook wants of a finished run."""

    run_dir: Path
    status: dict[str, Any] = field(repr=False)
    metrics: dict[str, Any] | None = field(repr=False)
    # Models already loaded, by checkpoint: sample() and figure() need not rebuild the data.
    _models: dict[str, VAE] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_reference(self) -> bool:
        """Whether the run fitted a reference model (``model=gaussian_mixture`` / ...)."""
        return self.status.get("model", "vae") != "vae"

    @property
    def gmm(self) -> GMM:
        """The exact mixture the run trained on (its ``gmm.yaml``)."""
        from gmm_vae.data.gmm import GMM

        return GMM.from_yaml(self.run_dir / "gmm.yaml")

    def model(self, ckpt: str = "last") -> VAE:
        """The trained VAE from ``checkpoints/<ckpt>.ckpt``, rebuilt from its own record (once
        per checkpoint; later calls return the same module). A reference model's run
        (``model=gaussian_mixture`` / ``spline_flow``) returns its fitted reference
        (``gmm_vae.model.references``: ``sample(n, seed)``, ``log_prob(x)``)."""
        if self.is_reference:
            from gmm_vae.runs import reference_run

            if "reference" not in self._models:
                self._models["reference"] = reference_run.load(self.run_dir
                                                               / reference_run.CHECKPOINT)
            return self._models["reference"]  # type: ignore[return-value]
        if ckpt not in self._models:
            self._models[ckpt] = self._load_model(ckpt)
        return self._models[ckpt]

    def _load_model(self, ckpt: str) -> VAE:
        from gmm_vae.runs import pipeline
        from gmm_vae.runs.rerun import (
            datamodule_for_run,
            load_checkpoint,
            load_run_config,
            load_weights,
            resolve_checkpoint,
        )

        cfg = load_run_config(self.run_dir)
        path, label = resolve_checkpoint(self.run_dir, ckpt)
        state = load_checkpoint(path, label)
        module = pipeline.build_model(cfg, datamodule_for_run(cfg, self.run_dir), state)
        load_weights(module, state, label)
        return module.vae.eval()

    def sample(self, n: int, seed: int = 0, ckpt: str = "last") -> np.ndarray:
        """``n`` points from the model, (n, D) float64 in data coordinates; seeded."""
        import torch

        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"n must be a positive integer (got {n!r})")
        vae = self.model(ckpt)
        if self.is_reference:  # a reference: numpy in, numpy out
            return vae.sample(n, seed)  # type: ignore[call-arg]
        torch.manual_seed(seed)
        return vae.sample(n).double().cpu().numpy()

    def figure(self, n: int = 5_000, seed: int = 0, ckpt: str = "last") -> Figure:
        """Model samples over true samples in every pair of coordinates, for inline display."""
        from gmm_vae.analysis import plots

        gmm = self.gmm
        truth = gmm.sample(n, np.random.default_rng(seed))[0]
        return plots.pairwise_projections(self.sample(n, seed, ckpt), truth, gmm.means,
                                          seed=seed, title=f"{self.run_dir} ({ckpt})")


def load_run(run_dir: str | Path) -> Run:
    """The run in ``run_dir`` (a train.py run directory); ConfigError when it is none."""
    path = Path(run_dir).expanduser()
    status_file = path / "status.json"
    if not status_file.is_file():
        raise ConfigError(f"run_dir={path}: not a train.py run directory (no status.json)")
    metrics_file = path / "evaluation" / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    return Run(path, json.loads(status_file.read_text()), metrics)


def train(overrides: Sequence[str] = (), run_dir: str | Path | None = None,
          overwrite: bool = False) -> Run:
    """Train as ``python train.py <overrides>`` would, into ``run_dir`` (default:
    ``outputs/<date>/<HH-MM-SS-microseconds>`` under the working directory), and load the run.

    The run directory gets the same ``.hydra/config.yaml`` and ``overrides.yaml`` the command
    writes, so ``evaluate.py``, ``resume=`` and ``load_run`` treat it like any other run.
    ``["rerun=<run dir>"]`` trains a copy of that run (its ``status["rerun_of"]`` says whether
    the numbers reproduced), as ``python train.py rerun=<run dir>`` does.
    """
    from omegaconf import OmegaConf

    from gmm_vae.config import check_run_mode
    from gmm_vae.runs import pipeline, reproduce, rundir
    from gmm_vae.runs.sweep_jobs import parse_override

    cfg = compose([*overrides, *(["overwrite=true"] if overwrite else [])])
    check_run_mode(cfg, multirun=False)
    source = None
    if cfg.rerun:
        cfg, source = reproduce.rerun_config(cfg, [parse_override(o)[0] for o in overrides])
    now = datetime.now()
    path = Path(run_dir) if run_dir is not None else \
        Path("outputs") / now.strftime("%Y-%m-%d") / now.strftime("%H-%M-%S-%f")
    rundir.check_free(path, "run_dir", overwrite=overwrite)
    if overwrite:
        rundir.clear(path)
    record = path / ".hydra"
    record.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, record / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), record / "overrides.yaml")
    pipeline.train(cfg, path, note={reproduce.STATUS_KEY: {"run_dir": str(source)}}
                   if source is not None else None)
    if source is not None:
        reproduce.report(source, path)
    return load_run(path)


def evaluate(run: Run | str | Path, ckpt: str = "last", n_samples: int | None = None,
             seed: int | None = None) -> dict[str, Any]:
    """``python evaluate.py run_dir=<run> ckpt=<ckpt>``: rewrites ``evaluation/``, returns the
    metrics (with the defaults, the evaluation training ended with, number for number)."""
    from gmm_vae.runs.rerun import evaluate_run

    run_dir = run.run_dir if isinstance(run, Run) else Path(run)
    return evaluate_run(run_dir, ckpt, n_samples, seed)


def judge(samples: np.ndarray | str | Path, truth: GMM | str | Path,
          out_dir: str | Path | None = None, n_samples: int | None = None,
          seed: int | None = None, c2st: bool = True) -> dict[str, Any]:
    """Score samples from anywhere against a mixture: ``python evaluate.py samples=<file>
    truth=<gmm.yaml | run dir> out=<dir>`` on an array.

    ``samples``: an (N, D) array in data coordinates, or the path of a .npy/.csv file;
    ``truth``: a ``GMM``, a spec file or a run directory. Every instrument that needs only
    samples runs (coverage, weight error, literature protocol, C2ST, sliced Wasserstein,
    clusters, modes); ``metrics["skipped"]`` names those that need a model. With ``out_dir``
    the evaluation files are written there. A bad input raises ``ConfigError`` in one line.
    """
    from gmm_vae.analysis.judge import judge as judge_samples

    return judge_samples(samples, truth, out_dir, n_samples, seed, c2st)
