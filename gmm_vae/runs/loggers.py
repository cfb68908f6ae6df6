"""The experiment loggers of a run: TensorBoard, CSV and MLflow, alone or together.

``cfg.logger`` has one flag per logger (``conf/logger/<name>.yaml`` each turns on its own, so
``logger=[tensorboard,csv]`` is both). Every logger gets the same things, where it can hold
them: the scalars under the same tags (``train/*``, ``val/*``, ``analysis/*``, ``hp/*``, logged
by the training module and the callbacks to ``trainer.loggers``), the hyper-parameters at the
end (``log_final``), and figures (TensorBoard and MLflow; a CSV file holds none). Where each
one writes:

- TensorBoard: ``events.out.tfevents.*`` in the run directory;
- CSV: ``<run_dir>/metrics.csv`` (a row per logging step, a column per tag) and
  ``hparams.yaml``; a resumed run continues the file instead of starting it again;
- MLflow: by default a local file store in the run directory (``file:<run_dir>/mlruns``, one
  MLflow run per invocation, tagged with the run dir), nothing reached over the network; the
  MLflow package is an optional extra (``pip install -e ".[mlflow]"``).
"""

from __future__ import annotations

import csv
import importlib.util
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from gmm_vae.analysis.registry import HPARAMS, STATUS_FILE, shown
from gmm_vae.analysis.search import objective
from gmm_vae.errors import ConfigError

if TYPE_CHECKING:
    import lightning as L
    from lightning.pytorch.loggers import Logger

log = logging.getLogger(__name__)

MLFLOW_DIR = "mlruns"
CSV_FILE = "metrics.csv"
MLFLOW_INSTALL = 'pip install -e ".[mlflow]"'
# What of evaluation/ an MLflow run keeps as artifacts (samples.npy is data, not a record).
MLFLOW_ARTIFACTS = ("metrics.json", "report.md", "*.png")

HPARAM_KEYS = ("data.n_components", "data.dim", "data.seed", "data.n_samples",
               "model.latent_dim", "model.likelihood", "model.decoder_covariance",
               "model.prior", "model.beta",
               "model.lr", "model.prior_components", "trainer.max_epochs", "seed")


def check_available(cfg: DictConfig) -> None:
    """Refuse, in one line and before anything is written, a logger whose package is missing.

    Only the MLflow package is optional; looking it up does not import it.
    """
    if cfg.logger.mlflow and importlib.util.find_spec("mlflow") is None:
        raise ConfigError("logger.mlflow=true needs the mlflow package, which is not "
                          f"installed: {MLFLOW_INSTALL} (or pip install mlflow-skinny)")


def mlflow_uri(cfg: DictConfig, run_dir: Path) -> str:
    """The MLflow tracking URI: ``logger.mlflow_tracking_uri``, or the run dir's own store.

    A plain path is a local file store there; any URI (``file:``, ``http://``, ...) is used as
    given.
    """
    uri = cfg.logger.mlflow_tracking_uri
    if uri is None:
        return f"file:{(run_dir / MLFLOW_DIR).resolve()}"
    uri = str(uri).strip()
    if ":" not in uri.split("/", 1)[0]:  # no scheme: a path
        return f"file:{Path(uri).expanduser().resolve()}"
    return uri


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    """The loggers ``cfg.logger`` turns on, all writing into (or for) ``run_dir``."""
    check_available(cfg)
    loggers: list[Logger] = []
    if cfg.logger.tensorboard:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="", version="",
                                         default_hp_metric=False))
    if cfg.logger.csv:
        loggers.append(_run_csv_logger(run_dir))
    if cfg.logger.mlflow:
        loggers.append(_mlflow_logger(cfg, run_dir))
    return loggers


def _run_csv_logger(run_dir: Path) -> Logger:
    """Lightning's CSVLogger on ``<run_dir>/metrics.csv``, continued when the run resumes.

    Lightning's writer deletes an existing ``metrics.csv`` (and warns about the non-empty
    directory, which a run dir always is); a resumed run keeps its earlier rows and adds its
    own, with the file's columns. ``tests/test_loggers.py`` pins this against Lightning.
    """
    from lightning.fabric.loggers.logger import rank_zero_experiment
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    class ContinuedWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:
            if os.path.isfile(self.metrics_file_path):
                with open(self.metrics_file_path, newline="") as fh:
                    self.metrics_keys = list(next(csv.reader(fh), []))

    class RunCSVLogger(CSVLogger):
        @property
        @rank_zero_experiment
        def experiment(self) -> ExperimentWriter:
            if self._experiment is None:
                os.makedirs(self.log_dir, exist_ok=True)
                self._experiment = ContinuedWriter(log_dir=self.log_dir)
            return self._experiment

    return RunCSVLogger(save_dir=str(run_dir), name="", version="")


def _mlflow_logger(cfg: DictConfig, run_dir: Path) -> Logger:
    """Lightning's MLFlowLogger on ``mlflow_uri``, its experiment created up front.

    Creating the experiment here reaches the store before training starts, so a wrong URI
    fails at once rather than after the run, and Lightning's "not found, creating it" warning
    is not printed for every new run dir. MLflow's usage telemetry is switched off (it would
    reach the network); its local file store needs MLFLOW_ALLOW_FILE_STORE, set in this
    process only when the store is a file store.
    """
    uri = mlflow_uri(cfg, run_dir)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if uri.startswith("file:"):
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.tracking import MlflowClient

    name = str(cfg.logger.mlflow_experiment)
    client = MlflowClient(uri)
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name)
    return MLFlowLogger(experiment_name=name, run_name=run_dir.name, tracking_uri=uri,
                        tags={"run_dir": str(run_dir.resolve()), "name": str(cfg.name)})


def final_hparams(trainer: L.Trainer, cfg: DictConfig,
                  evaluation: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """The hyper-parameters (``HPARAM_KEYS``) and the final ``hp/*`` metrics of a run."""
    params = {k: OmegaConf.select(cfg, k) for k in HPARAM_KEYS}
    params["model.hidden_dims"] = str(list(cfg.model.hidden_dims))
    params["model.latent_dim"] = int(trainer.lightning_module.vae.latent_dim)  # resolved if auto
    # The registry's HPARAMS rows; status.json's (the objective) are computed here.
    status = {"objective": objective(evaluation)}
    values = {f"hp/{m.name}": status.get(m.name) if m.source == STATUS_FILE else m.read(evaluation)
              for m in shown(HPARAMS)}
    return params, {k: float(v) for k, v in values.items() if v is not None}


def log_final(trainer: L.Trainer, cfg: DictConfig, evaluation: dict[str, Any],
              run_dir: Path) -> None:
    """Hyper-parameters beside the final metrics, to every logger in its own form.

    TensorBoard: the HPARAMS tab (sweeps compare there). CSV: ``hparams.yaml`` and a last row of
    ``hp/*``. MLflow: params, ``hp/*`` metrics, and the evaluation's report, metrics and
    figures as artifacts. CSV and MLflow already hold the hyper-parameters Lightning logs at the
    start (the model's and the data module's, where ``seed`` is the data module's), so the
    run's settings go in as ``config.<setting>``: MLflow refuses a param logged twice with two
    values, and ``hparams.yaml`` would silently change meaning.
    """
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger

    params, metrics = final_hparams(trainer, cfg, evaluation)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics)
            continue
        logger.log_hyperparams({f"config.{k}": v for k, v in params.items()})
        logger.log_metrics(metrics, step=int(trainer.global_step))
        if isinstance(logger, MLFlowLogger):
            out = run_dir / "evaluation"
            for pattern in MLFLOW_ARTIFACTS:
                for path in sorted(out.glob(pattern)):
                    logger.experiment.log_artifact(logger.run_id, str(path), "evaluation")


# Lightning's finalize statuses; MLflow's run status for an interrupted run is KILLED.
FINISHED, FAILED, KILLED = "success", "failed", "KILLED"


def finish(trainer: L.Trainer | None, status: str) -> None:
    """Flush every logger and record how the run ended (MLflow's run status).

    Lightning finalises the loggers when ``fit`` returns, before the evaluation and the final
    hyper-parameters; this writes those and corrects the status of a run that failed or was
    interrupted afterwards. A logger that cannot finish is logged, never raised: the run's
    own outcome is the one to report.
    """
    for logger in trainer.loggers if trainer is not None else []:
        try:
            logger.finalize(status)
        except Exception as exc:
            log.error("could not finalise the %s logger: %s", type(logger).__name__,
                      f"{type(exc).__name__}: {exc}".splitlines()[0])


def summary_lines(trainer: L.Trainer | None, cfg: DictConfig, run_dir: Path) -> list[str]:
    """Where each logger put the run, for the summary printed at the end."""
    from lightning.pytorch.loggers import MLFlowLogger

    lines = []
    if cfg.logger.tensorboard:
        lines.append(f"  TensorBoard: tensorboard --logdir {run_dir}")
    if cfg.logger.csv:
        lines.append(f"  CSV:         {run_dir / CSV_FILE}")
    for logger in trainer.loggers if trainer is not None else []:
        if isinstance(logger, MLFlowLogger):
            lines.append(f"  MLflow:      {mlflow_uri(cfg, run_dir)} (experiment "
                         f"{cfg.logger.mlflow_experiment}, run {logger.run_id})")
    return lines
