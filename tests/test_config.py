"""Every shipped config composes and validates; the schema rejects unknown keys and bad types."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from gmm_vae import config as config_mod
from gmm_vae.errors import ConfigError
from tests.conftest import CONF


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override",
    [""] + [f"experiment={o}" for o in _options("experiment")]
    + [f"debug={o}" for o in _options("debug")]
    + [f"logger={o}" for o in _options("logger")],
)
def test_every_config_composes_and_validates(compose_cfg, override: str) -> None:
    cfg = compose_cfg([override] if override else [])
    config_mod.validate(cfg)
    latent = config_mod.resolve_latent_dim(cfg.model.latent_dim, cfg.data.dim)
    assert cfg.data.dim >= 1 and latent >= 1


def test_defaults_are_the_documented_ones(compose_cfg) -> None:
    cfg = compose_cfg()
    assert (cfg.data.n_components, cfg.data.dim, cfg.data.n_samples) == (4, 3, 10_000)
    assert cfg.data.batch_size == 128
    assert list(cfg.model.hidden_dims) == [128, 128]
    # latent_dim: auto = max(2, D): one latent unit per data direction.
    assert cfg.model.latent_dim is None
    assert config_mod.resolve_latent_dim(None, 1) == 2
    assert config_mod.resolve_latent_dim(None, 3) == 3
    assert config_mod.resolve_latent_dim(None, 10) == 10
    assert config_mod.resolve_latent_dim(5, 10) == 5
    assert (cfg.model.likelihood, cfg.model.prior) == ("gaussian", "mog")
    assert cfg.model.decoder_covariance == "full"  # README, "Rounded components"
    # prior_refit_every: auto = a twelfth of training (25 of the default 300 epochs).
    assert cfg.model.prior_refit_every is None
    assert config_mod.resolve_auto_epochs("prior_refit_every", None, 300) == 25
    assert config_mod.resolve_auto_epochs("prior_refit_every", None, 2) == 1
    assert config_mod.resolve_auto_epochs("prior_refit_every", 0, 300) == 0
    # The warm-ups: 100 and 50 of the default 300 epochs.
    assert config_mod.resolve_auto_epochs("kl_warmup_epochs", None, 300) == 100
    assert config_mod.resolve_auto_epochs("decoder_var_warmup_epochs", None, 300) == 50


def test_seed_reproduction_is_the_study_setup(compose_cfg) -> None:
    cfg = compose_cfg(["experiment=seed_reproduction"])
    assert cfg.model.likelihood == "sigmoid" and cfg.model.prior == "standard"
    assert cfg.data.normalization == "minmax"


def test_unknown_key_and_wrong_type_are_rejected(compose_cfg) -> None:
    with pytest.raises(ConfigCompositionException):
        compose_cfg(["data.bogus=1"])
    with pytest.raises(ConfigCompositionException):
        compose_cfg(["model.latent_dim=two"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.n_components=0", "data.n_components must be a positive integer (got 0)"),
        ("model.prior=vamp", "model.prior must be one of standard, mog, flow (got 'vamp')"),
        ("model.lr=-1", "model.lr must be a positive finite number (got -1.0)"),
        ("analysis.every_n_epochs=-1", "analysis.every_n_epochs must be an integer >= 0"),
        ("data.scale_max=1e300", "data.scale_max must be at most 1e+09"),
        ("model.prior_refit_every=-2", "model.prior_refit_every must be an integer >= 0"),
    ],
)
def test_semantic_validation_messages(compose_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_mod.validate(compose_cfg([override]))
    assert str(info.value).startswith(message)
