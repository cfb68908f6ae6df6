"""The VAE keeps the study's interface, and its loss behaves as documented."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from gmm_vae.data.datamodule import GMMDataModule
from gmm_vae.model.training import VAEModule
from gmm_vae.model.vae import VAE


@pytest.mark.parametrize("likelihood", ["gaussian", "sigmoid"])
@pytest.mark.parametrize("prior", ["standard", "mog", "flow"])
def test_seed_interface_shapes(likelihood: str, prior: str) -> None:
    torch.manual_seed(0)
    model = VAE(data_dim=3, latent_dim=2, hidden_dims=[16, 16], likelihood=likelihood,
                prior=prior)
    x = torch.randn(10, 3)
    mean, variance, z = model.encode_and_sample(x)
    assert mean.shape == variance.shape == z.shape == (10, 2)
    assert (variance > 0).all()
    assert model.decode(z).shape == (10, 3)
    assert model.reparameterize(mean, variance.log()).shape == (10, 2)
    samples = model.sample(7)
    assert samples.shape == (7, 3) and torch.isfinite(samples).all()
    terms = model.loss_terms(x)
    assert set(terms) == {"loss", "recon", "kl"}
    assert all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())
    if likelihood == "sigmoid":
        assert ((model.decode(z) >= 0) & (model.decode(z) <= 1)).all()


def test_encoder_and_decoder_are_dense_relu_with_configured_widths() -> None:
    model = VAE(data_dim=5, latent_dim=3, hidden_dims=[64, 32])
    linears = [m for m in model.encoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5, 64), (64, 32), (32, 6)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in model.encoder) == 2
    dec = [m for m in model.decoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in dec] == [(3, 32), (32, 64), (64, 10)]


def test_samples_are_in_data_coordinates() -> None:
    model = VAE(data_dim=2, latent_dim=2, hidden_dims=[8], data_shift=[100.0, -50.0],
                data_scale=[0.01, 0.01])
    torch.nn.init.zeros_(model.decoder[-1].weight)
    torch.nn.init.zeros_(model.decoder[-1].bias)  # mean 0, log-var 0 in normalised space
    x = model.sample(20_000)
    torch.testing.assert_close(x.mean(0), torch.tensor([100.0, -50.0]), atol=0.01, rtol=0)
    torch.testing.assert_close(x.std(0), torch.tensor([0.01, 0.01]), atol=0.001, rtol=0)


@pytest.mark.parametrize(("bias", "kl"), [
    ([0.0, 0.0, 0.0, 0.0], 0.0),  # q = p
    # means (1, 0), log-variances (0, log 2): 0.5 + 0.5 * (2 - 1 - log 2) nats
    ([1.0, 0.0, 0.0, math.log(2.0)], 0.5 + 0.5 * (1.0 - math.log(2.0))),
])
def test_kl_is_the_closed_form_at_and_away_from_the_prior(bias: list[float], kl: float) -> None:
    model = VAE(data_dim=2, latent_dim=2, hidden_dims=[8])
    torch.nn.init.zeros_(model.encoder[-1].weight)
    with torch.no_grad():
        model.encoder[-1].bias.copy_(torch.tensor(bias))  # [mean, log-variance] for every x
    assert model.loss_terms(torch.randn(16, 2))["kl"].item() == pytest.approx(kl, abs=1e-6)


def test_encode_and_sample_returns_the_variance_and_draws_from_it() -> None:
    """The seed's interface returns sigma^2 (not log sigma^2, not sigma), and z ~ N(mean, it)."""
    model = VAE(data_dim=2, latent_dim=2, hidden_dims=[8])
    torch.nn.init.zeros_(model.encoder[-1].weight)
    with torch.no_grad():
        model.encoder[-1].bias.copy_(torch.tensor([1.0, -2.0, math.log(4.0), math.log(0.25)]))
    torch.manual_seed(0)
    mean, variance, z = model.encode_and_sample(torch.randn(100_000, 2))
    torch.testing.assert_close(mean[0], torch.tensor([1.0, -2.0]))
    torch.testing.assert_close(variance[0], torch.tensor([4.0, 0.25]))
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.02, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([2.0, 0.5]), atol=0.02, rtol=0)


def test_iwae_matches_a_known_likelihood() -> None:
    """q(z|x) = p(z) and p(x|z) = N(0, I): every importance weight is exactly p(x)."""
    model = VAE(data_dim=2, latent_dim=1, hidden_dims=[4], data_scale=[2.0, 2.0])
    for layer in (model.encoder[-1], model.decoder[-1]):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    x = torch.randn(50, 2) * 2.0  # N(0, 4I) in data coordinates
    expected = torch.distributions.Normal(0.0, 2.0).log_prob(x).sum(-1)
    torch.testing.assert_close(model.log_prob(x, k=16), expected, atol=1e-4, rtol=0)


def test_iwae_weights_by_prior_over_posterior_when_they_differ() -> None:
    """q(z|x) = N(0.5, 2) != p(z), p(x|z) = N(0, I): weights p(x) p(z) / q(z|x) average to
    p(x), so with many samples the bound is tight; with one it is log p(x) - KL(q || p) on
    average (0.278 nats). Swapping p and q, or dropping either, misses both. (q wider than p
    keeps the weights bounded; a variance of 0.5 or less would give them infinite variance.)"""
    model = VAE(data_dim=2, latent_dim=1, hidden_dims=[4])
    for layer in (model.encoder[-1], model.decoder[-1]):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    with torch.no_grad():
        model.encoder[-1].bias.copy_(torch.tensor([0.5, math.log(2.0)]))
    torch.manual_seed(0)
    x = torch.randn(200, 2)
    exact = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)
    kl = 0.5 * (0.25 + 2.0 - 1.0 - math.log(2.0))
    gap_many = float((exact - model.log_prob(x, k=4096)).mean())
    gap_one = float((exact.repeat(200) - model.log_prob(x.repeat(200, 1), k=1)).mean())
    assert abs(gap_many) < 0.01, gap_many  # |gap| measured <= 0.0007 on three seeds
    assert gap_one == pytest.approx(kl, abs=0.02)


def test_loss_decreases_on_a_tiny_run() -> None:
    L.seed_everything(0, verbose=False)
    dm = GMMDataModule(n_samples=1024, n_val=256, n_test=256, batch_size=64)
    model = VAEModule(data_dim=3, hidden_dims=[32, 32], lr=3e-3)
    before = model.vae.loss_terms(dm.t_val)["loss"].item()
    trainer = L.Trainer(max_epochs=8, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    with torch.no_grad():
        after = model.vae.loss_terms(dm.t_val)["loss"].item()
    assert after < before - 0.5, (before, after)
