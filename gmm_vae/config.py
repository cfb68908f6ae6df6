"""Typed configuration schema, registered in Hydra's ConfigStore.

The YAML files under ``conf/`` give the values; these dataclasses give the types, so Hydra rejects
an unknown key or a wrongly typed value before anything runs. ``validate`` adds the semantic
checks (positive sizes, known names) with one-line messages naming the setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from gmm_vae.errors import ConfigError
from gmm_vae.resources import check_memory
from gmm_vae.shapes import MAX_LOG_VAR, MIN_LOG_VAR, auto_latent_dim

LIKELIHOODS = ("gaussian", "sigmoid")
COVARIANCES = ("full", "diag")
MSE_REDUCTIONS = ("sum", "mean")
PRIORS = ("standard", "mog", "flow")
# model.family: the VAE, or a reference fitted on the same data (gmm_vae/model/references.py)
FAMILIES = ("vae", "gaussian_mixture", "spline_flow")
# model.* keys a reference model reads and the VAE does not take
REFERENCE_KEYS = ("family", "reference_components", "reference_inits")


def is_reference(cfg: Any) -> bool:
    """Whether a run's model is a reference (``model.family``), not the VAE."""
    return str(cfg.model.get("family", "vae")) != "vae"
NORMALIZATIONS = ("standard", "minmax", "none")
CLUSTER_CRITERIA = ("silhouette", "bic", "elbow")
# Seeds numpy, Lightning and the data streams all accept: the unsigned 32-bit integers.
SEED_MAX = 2**32 - 1


@dataclass
class DataConfig:
    """The ground-truth mixture and the data sets drawn from it."""

    n_components: int = 4
    dim: int = 3
    seed: int = 0
    spec_path: str | None = None
    n_samples: int = 10_000
    n_val: int = 2_000
    n_test: int = 5_000
    batch_size: int = 128
    mean_spread: float = 4.0
    scale_min: float = 0.4
    scale_max: float = 1.0
    weight_concentration: float = 5.0
    min_separation: float = 2.0
    normalization: str = "standard"
    steps_per_call: int = 8


@dataclass
class ModelConfig:
    """The VAE: architecture, likelihood head, prior and optimiser; or a reference model
    (``family``: ``gaussian_mixture`` / ``spline_flow``, gmm_vae/model/references.py) that is
    fitted on the same data and judged by the same evaluation."""

    family: str = "vae"
    reference_components: int | None = None  # gaussian_mixture: K of the fit; None = the truth's
    reference_inits: int = 5  # gaussian_mixture: EM starts
    latent_dim: int | None = None
    hidden_dims: list[int] = field(default_factory=lambda: [128, 128])
    likelihood: str = "gaussian"
    decoder_covariance: str = "full"
    mse_reduction: str = "sum"
    prior: str = "mog"
    prior_components: int = 64
    flow_transforms: int = 3
    flow_hidden: int = 64
    beta: float = 1.0
    kl_warmup_epochs: int | None = None
    free_bits: float = 0.0
    decoder_init_log_var: float = -6.0
    decoder_var_warmup_epochs: int | None = None
    prior_refit_every: int | None = None
    lr: float = 2e-3
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    cuda_graphs: bool = True


@dataclass
class TrainerConfig:
    """The subset of ``lightning.Trainer`` arguments a user sets from the command line."""

    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: Any = "auto"
    num_nodes: int = 1
    precision: Any = "32-true"
    max_epochs: int = 300
    max_time: str | None = None
    log_every_n_steps: int = 50
    check_val_every_n_epoch: int = 1
    gradient_clip_val: float | None = None
    deterministic: Any = False
    enable_progress_bar: bool = True
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    fast_dev_run: Any = False


@dataclass
class CallbacksConfig:
    """Which Lightning callbacks are attached and how often they act."""

    checkpoint: bool = True
    progress_refresh_rate: int = 10
    nan_guard: bool = True


@dataclass
class LoggerConfig:
    """Experiment loggers, any of them together (``gmm_vae/runs/loggers.py``).

    Each ``conf/logger/<name>.yaml`` turns on its own flag only, so ``logger=csv`` is the CSV
    logger alone and ``logger=[tensorboard,csv]`` both; every flag is off unless a file or an
    override turns it on (``train.yaml`` selects ``logger: tensorboard``).
    """

    tensorboard: bool = False
    csv: bool = False
    mlflow: bool = False
    # null: a local file store in the run directory, file:<run dir>/mlruns (no server, no network)
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "gmm-vae"


@dataclass
class AnalysisConfig:
    """Cadence and settings of the analysis callbacks and of the final evaluation."""

    every_n_epochs: int = 50
    tsne_every_n_epochs: int = 250
    tsne_points: int = 1_000
    n_samples: int = 2_000
    k_max: int | None = None
    cluster_criterion: str = "bic"
    hist_bins: int = 50
    peak_height: float = 0.1
    peak_distance: int = 3
    hq_quantile: float = 0.99
    hq_threshold: float | None = None
    min_share: float = 0.01
    min_capture: float = 0.1
    iwae_samples: int = 64
    evaluate_at_end: bool = True
    eval_samples: int = 10_000
    coverage_samples: int = 1_000_000
    c2st: bool = True


@dataclass
class TrainConfig:
    """Top level of ``conf/train.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    seed: int = 42
    torch_threads: int | None = None
    ckpt_path: str | None = None
    resume: str | None = None
    rerun: str | None = None
    overwrite: bool = False
    sweep_resume: bool = False
    name: str = "default"


# Auto epoch counts, as fractions of trainer.max_epochs: the KL warm-up (100 of the default 300),
# the decoder-variance cap (50), and the interval between EM refits of the mixture prior (25).
# As shares, the refits stay the same number whatever the run's length (nine of a default run:
# eight after the KL warm-up, one after the last epoch), so their cost stays a fixed share of
# training (0.2-0.5 s each on 10,000 points, ~0.2 s per epoch).
AUTO_EPOCHS = {"kl_warmup_epochs": 1 / 3, "decoder_var_warmup_epochs": 1 / 6,
               "prior_refit_every": 1 / 12}


def resolve_auto_epochs(key: str, epochs: int | None, max_epochs: int) -> int:
    """``model.<key>`` in epochs, where null (auto) is its ``AUTO_EPOCHS`` share of training."""
    if epochs is not None:
        return int(epochs)
    return max(1, int(max_epochs * AUTO_EPOCHS[key]))


MAX_DATA_SCALE = 1e9


def resolve_latent_dim(latent_dim: int | None, data_dim: int) -> int:
    """``model.latent_dim``, where null means auto (``shapes.auto_latent_dim``: max(2, D))."""
    return int(latent_dim) if latent_dim is not None else auto_latent_dim(data_dim)


def register_configs() -> None:
    """Register the schema so ``conf/train.yaml`` can list ``train_schema`` in its defaults."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)


def _positive_int(cfg: DictConfig, key: str, minimum: int = 1) -> None:
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        allowed = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{key} must be {allowed} (got {value!r})")


def _positive_float(cfg: DictConfig, key: str, allow_zero: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    ok = isinstance(value, int | float) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        allowed = "a finite number >= 0" if allow_zero else "a positive finite number"
        raise ConfigError(f"{key} must be {allowed} (got {value!r})")


def check_seed(value: Any, key: str) -> None:
    """A seed every generator takes as it is: numpy rejects negatives, Lightning anything past
    2**32 - 1. Refused rather than folded into range, so one seed never silently means
    another."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{key} must be an integer in 0..{SEED_MAX} (got {value!r})")


def _choice(cfg: DictConfig, key: str, allowed: tuple[str, ...]) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {', '.join(allowed)} (got {value!r})")


def _known_keys_only(cfg: DictConfig) -> None:
    """Every key of the composed config is in the schema.

    Hydra's ``+data.extra=1`` adds a key even to a typed group; it would reach the data module
    or the model as an unexpected argument and fail with a traceback (found by the fuzz test).
    """
    for name, f in TrainConfig.__dataclass_fields__.items():
        schema = f.default_factory() if callable(f.default_factory) else None  # type: ignore[misc]
        node = cfg.get(name)
        if schema is None or not isinstance(node, DictConfig):
            continue
        allowed = set(type(schema).__dataclass_fields__)
        for key in node:
            if key not in allowed:
                raise ConfigError(f"{name}.{key}: Key '{key}' not in '{type(schema).__name__}'")
    top = set(TrainConfig.__dataclass_fields__)
    for key in cfg:
        if key not in top:
            raise ConfigError(f"{key}: Key '{key}' not in 'TrainConfig'")


def validate(cfg: DictConfig, check_resources: bool = True) -> None:
    """Semantic checks the type system cannot express; raise ConfigError on the first failure.

    Last comes the memory estimate (``resources.check_memory``), so a size that cannot fit is
    refused before anything is allocated; ``check_resources=False`` skips it.
    """
    _known_keys_only(cfg)
    check_seed(cfg.seed, "seed")
    check_seed(cfg.data.seed, "data.seed")
    for key in ("data.dim", "data.n_components", "data.n_samples", "data.n_val", "data.n_test",
                "data.batch_size", "data.steps_per_call",
                "model.prior_components", "model.reference_inits",
                "model.flow_transforms", "model.flow_hidden", "trainer.max_epochs",
                "analysis.tsne_points", "analysis.n_samples", "analysis.hist_bins",
                "analysis.peak_distance", "analysis.iwae_samples", "analysis.eval_samples",
                "analysis.coverage_samples"):
        _positive_int(cfg, key)
    for key in ("analysis.every_n_epochs", "analysis.tsne_every_n_epochs",
                "callbacks.progress_refresh_rate"):
        _positive_int(cfg, key, minimum=0)
    if cfg.analysis.k_max is not None:
        _positive_int(cfg, "analysis.k_max", minimum=2)
    _positive_float(cfg, "analysis.min_capture")
    if cfg.analysis.min_capture > 1:
        raise ConfigError("analysis.min_capture must be in (0, 1]: the fraction of a perfect "
                          f"sampler's share a captured mode needs (got {cfg.analysis.min_capture})")
    if cfg.model.latent_dim is not None:
        _positive_int(cfg, "model.latent_dim")
    for key in ("model.kl_warmup_epochs", "model.decoder_var_warmup_epochs",
                "model.prior_refit_every"):
        if OmegaConf.select(cfg, key) is not None:
            _positive_int(cfg, key, minimum=0)
    log_var = cfg.model.decoder_init_log_var
    if not isinstance(log_var, int | float) or not MIN_LOG_VAR <= log_var <= MAX_LOG_VAR:
        raise ConfigError(f"model.decoder_init_log_var must be a number in [{MIN_LOG_VAR:g}, "
                          f"{MAX_LOG_VAR:g}], the decoder's log-variance bounds (got {log_var!r})")
    for key in ("model.lr", "data.mean_spread", "data.scale_min", "data.scale_max",
                "data.weight_concentration"):
        _positive_float(cfg, key)
    if cfg.analysis.hq_threshold is not None:
        _positive_float(cfg, "analysis.hq_threshold")
    quantile = cfg.analysis.hq_quantile
    if not (isinstance(quantile, int | float) and 0 < quantile < 1):
        raise ConfigError("analysis.hq_quantile must be in (0, 1): the chi2_D quantile of the "
                          "high-quality radius, a perfect sampler's high-quality share "
                          f"(got {quantile!r})")
    for key in ("model.beta", "model.free_bits", "model.weight_decay", "data.min_separation",
                "analysis.peak_height", "analysis.min_share"):
        _positive_float(cfg, key, allow_zero=True)
    for key in ("data.mean_spread", "data.scale_min", "data.scale_max"):
        # Variances are squared scales, and the data and models run in float32: past ~1e19
        # a square overflows to inf. 1e9 leaves room for every sum of squares downstream.
        if OmegaConf.select(cfg, key) > MAX_DATA_SCALE:
            raise ConfigError(f"{key} must be at most {MAX_DATA_SCALE:g}, the largest data "
                              f"scale whose squares stay finite in float32 sums "
                              f"(got {OmegaConf.select(cfg, key)!r})")
    if cfg.data.scale_min > cfg.data.scale_max:
        raise ConfigError(
            f"data.scale_min must be <= data.scale_max (got {cfg.data.scale_min} > "
            f"{cfg.data.scale_max})"
        )
    hidden = list(cfg.model.hidden_dims)
    if not hidden or any(not isinstance(h, int) or h < 1 for h in hidden):
        raise ConfigError(
            f"model.hidden_dims must be a non-empty list of positive integers (got {hidden})"
        )
    _choice(cfg, "model.family", FAMILIES)
    if cfg.model.reference_components is not None:
        _positive_int(cfg, "model.reference_components")
    if is_reference(cfg):
        for key in ("ckpt_path", "resume"):
            if cfg.get(key):
                raise ConfigError(
                    f"{key}={cfg.get(key)}: model={cfg.model.family} is a reference model, "
                    "fitted in one go with no checkpoint to continue from; drop the setting "
                    "(re-score its run with python evaluate.py run_dir=<run dir>)")
    _choice(cfg, "model.likelihood", LIKELIHOODS)
    _choice(cfg, "model.decoder_covariance", COVARIANCES)
    _choice(cfg, "model.mse_reduction", MSE_REDUCTIONS)
    _choice(cfg, "model.prior", PRIORS)
    _choice(cfg, "model.lr_schedule", ("none", "cosine"))
    _choice(cfg, "data.normalization", NORMALIZATIONS)
    _choice(cfg, "analysis.cluster_criterion", CLUSTER_CRITERIA)
    if cfg.data.spec_path is None and cfg.data.n_samples < cfg.data.n_components:
        raise ConfigError(
            f"data.n_samples must be >= data.n_components = {cfg.data.n_components} "
            f"(got {cfg.data.n_samples})"
        )
    _check_run_settings(cfg)
    if check_resources:
        check_memory(cfg)


def _check_run_settings(cfg: DictConfig) -> None:
    """The settings that say which run this is (``resume``, ``rerun``, ``overwrite``,
    ``sweep_resume``) and the loggers' own: combinations that contradict each other."""
    if cfg.resume and cfg.rerun:
        raise ConfigError(f"rerun={cfg.rerun} and resume={cfg.resume} cannot be combined: rerun "
                          "trains a copy of a run in a new directory, resume continues one in "
                          "place")
    if cfg.sweep_resume and cfg.overwrite:
        raise ConfigError("sweep_resume=true and overwrite=true cannot be combined: "
                          "sweep_resume keeps the jobs that are done, overwrite clears them all")
    for key in ("rerun", "logger.mlflow_tracking_uri"):
        value = OmegaConf.select(cfg, key)
        if value is not None and not str(value).strip():
            raise ConfigError(f"{key} must be null or a non-empty string (got {value!r})")
    if not str(cfg.logger.mlflow_experiment).strip():
        raise ConfigError("logger.mlflow_experiment must be a non-empty experiment name (got "
                          f"{cfg.logger.mlflow_experiment!r})")


def check_run_mode(cfg: DictConfig, multirun: bool) -> None:
    """``sweep_resume=true`` means something only to a multirun; a single run is refused in
    one line instead of ignoring it (a user who meant to continue one run wants ``resume``)."""
    if cfg.get("sweep_resume") and not multirun:
        raise ConfigError("sweep_resume=true applies to a multirun (python train.py -m ... "
                          "hydra.sweep.dir=<the sweep's dir> sweep_resume=true); continue one "
                          "run with resume=<run dir>")
