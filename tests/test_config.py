"""Every shipped config composes and validates; the schema rejects unknown keys and bad types."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from gmm_vae import config as config_mod
from gmm_vae.cli import user_error_message
from gmm_vae.errors import ConfigError
from tests.conftest import CONF


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _file_values(override: str) -> DictConfig:
    """What ``conf/<group>/<option>.yaml`` sets, placed where its package puts it.

    A group's option replaces the default option of its group, so the group's node is the
    schema's defaults with the file's values on top (``logger=csv`` is the CSV logger alone).
    """
    group, option = override.split("=")
    text = (CONF / group / f"{option}.yaml").read_text()
    values = OmegaConf.create(text)
    if text.startswith("# @package _global_\n"):
        return values
    schema = getattr(config_mod.TrainConfig(), group, None)
    base = OmegaConf.structured(schema) if schema is not None else OmegaConf.create()
    return OmegaConf.create({group: OmegaConf.merge(base, values)})


@pytest.mark.parametrize(
    "overrides",
    [[f"experiment={o}"] for o in _options("experiment")]
    + [[f"debug={o}"] for o in _options("debug")]
    + [[f"logger={o}"] for o in _options("logger")]
    # Both set model.hidden_dims; debug comes last in the defaults, so a debug run of an
    # experiment stays tiny.
    + [["experiment=seed_reproduction", "debug=tiny"]],
    ids=" ".join,
)
def test_every_config_file_sets_its_values_and_nothing_else(compose_cfg,
                                                            overrides: list[str]) -> None:
    """Composed with the defaults, each file changes exactly the values it writes (so none is
    lost to a wrong package or defaults order, and none leaks into other settings), and the
    result validates."""
    cfg = compose_cfg(overrides)
    expected = OmegaConf.merge(compose_cfg(), *map(_file_values, overrides))
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(expected)
    config_mod.validate(cfg)


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
    assert cfg.model.decoder_covariance == "full"  # docs/fidelity.md, "Rounded components"
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
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(["data.bogus=1"])
    assert user_error_message(info.value) == "data.bogus: Key 'bogus' not in 'DataConfig'"
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg(["model.latent_dim=two"])
    assert user_error_message(info.value) == (
        "model.latent_dim: Value 'two' of type 'str' could not be converted to Integer")
    # ``+`` adds a key Hydra does not check against the schema; validate does.
    with pytest.raises(ConfigError) as info:
        config_mod.validate(compose_cfg(["+data.extra=1"]))
    assert str(info.value) == "data.extra: Key 'extra' not in 'DataConfig'"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.n_components=0", "data.n_components must be a positive integer (got 0)"),
        ("model.prior=vamp", "model.prior must be one of standard, mog, flow (got 'vamp')"),
        ("model.lr=-1", "model.lr must be a positive finite number (got -1.0)"),
        ("analysis.every_n_epochs=-1",
         "analysis.every_n_epochs must be an integer >= 0 (got -1)"),
        ("data.scale_max=1e300", "data.scale_max must be at most 1e+09, the largest data scale "
                                 "whose squares stay finite in float32 sums (got 1e+300)"),
        ("model.prior_refit_every=-2",
         "model.prior_refit_every must be an integer >= 0 (got -2)"),
        ("data.scale_min=2", "data.scale_min must be <= data.scale_max (got 2.0 > 1.0)"),
        ("analysis.min_capture=1.5", "analysis.min_capture must be in (0, 1]: the fraction of a "
                                     "perfect sampler's share a captured mode needs (got 1.5)"),
        ("analysis.hq_quantile=1", "analysis.hq_quantile must be in (0, 1): the chi2_D quantile "
                                   "of the high-quality radius, a perfect sampler's high-quality "
                                   "share (got 1.0)"),
        ("analysis.hq_threshold=0", "analysis.hq_threshold must be a positive finite number "
                                    "(got 0.0)"),
        ("model.decoder_init_log_var=6.5", "model.decoder_init_log_var must be a number in "
                                           "[-12, 6], the decoder's log-variance bounds "
                                           "(got 6.5)"),
        ("analysis.k_max=1", "analysis.k_max must be an integer >= 2 (got 1)"),
        ("model.hidden_dims=[32,0]",
         "model.hidden_dims must be a non-empty list of positive integers (got [32, 0])"),
        ("data.n_samples=3", "data.n_samples must be >= data.n_components = 4 (got 3)"),
    ],
)
def test_semantic_validation_messages(compose_cfg, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_mod.validate(compose_cfg([override]))
    assert str(info.value) == message


@pytest.mark.parametrize("override", [
    "analysis.every_n_epochs=0", "model.prior_refit_every=0", "model.decoder_init_log_var=-12",
    "model.decoder_init_log_var=6", "analysis.min_capture=1", "analysis.k_max=2",
    "data.n_samples=4", "data.scale_min=1.0", "model.beta=0", "data.min_separation=0",
    "analysis.hq_quantile=0.999999", "analysis.hq_threshold=3", "analysis.hq_threshold=null",
])
def test_values_at_each_bound_are_accepted(compose_cfg, override: str) -> None:
    """The other side of each refusal above: the bound itself is allowed (no off-by-one)."""
    config_mod.validate(compose_cfg(["debug=tiny", override]))
