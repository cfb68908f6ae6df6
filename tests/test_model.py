"""The VAE keeps the study's interface, and its loss behaves as documented."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from gmm_vae.data import GMMDataModule
from gmm_vae.model import VAE


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


def test_kl_is_zero_when_posterior_equals_prior() -> None:
    model = VAE(data_dim=2, latent_dim=2, hidden_dims=[8])
    torch.nn.init.zeros_(model.encoder[-1].weight)
    torch.nn.init.zeros_(model.encoder[-1].bias)
    assert model.loss_terms(torch.randn(16, 2))["kl"].item() == pytest.approx(0.0, abs=1e-6)


def test_iwae_matches_a_known_likelihood() -> None:
    """q(z|x) = p(z) and p(x|z) = N(0, I): every importance weight is exactly p(x)."""
    model = VAE(data_dim=2, latent_dim=1, hidden_dims=[4], data_scale=[2.0, 2.0])
    for layer in (model.encoder[-1], model.decoder[-1]):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    x = torch.randn(50, 2) * 2.0  # N(0, 4I) in data coordinates
    expected = torch.distributions.Normal(0.0, 2.0).log_prob(x).sum(-1)
    torch.testing.assert_close(model.log_prob(x, k=16), expected, atol=1e-4, rtol=0)


def test_loss_decreases_on_a_tiny_run() -> None:
    L.seed_everything(0, verbose=False)
    dm = GMMDataModule(n_samples=1024, n_val=256, n_test=256, batch_size=64)
    model = VAE(data_dim=3, hidden_dims=[32, 32], lr=3e-3)
    before = model.loss_terms(dm.t_val)["loss"].item()
    trainer = L.Trainer(max_epochs=8, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    with torch.no_grad():
        after = model.loss_terms(dm.t_val)["loss"].item()
    assert after < before - 0.5, (before, after)
