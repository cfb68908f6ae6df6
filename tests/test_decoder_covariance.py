"""The full-covariance p(x|z): the density it claims, the samples it draws, and why it exists.

With an axis-aligned p(x|z) the decoder's noise stood at about each component's smallest std
on every data axis; a thin component rotated off the axes had to be drawn by the code alone,
and came out rounded (random tight anisotropic 5-D mixtures: HQ 0.93-0.95 of a perfect
sampler's, NLL gap 0.11-0.15 nats; docs/fidelity.md, "Rounded components"). The full head writes the
precision of p(x|z) as P^T diag(exp(-log_var)) P with P unit lower-triangular. These tests pin
its density and its samples to a known Gaussian, and check that on a thin rotated mixture it
learns what the diagonal head cannot.
"""

from __future__ import annotations

import math

import pytest
import torch

from gmm_vae import chunks, shapes
from gmm_vae.model.losses import row_selector, tril_index, unwhiten, whiten
from gmm_vae.model.vae import VAE

# A covariance with strong correlations: thin along (1, 1, 1), wide across it.
ROTATION = torch.linalg.qr(torch.tensor([[1.0, 1.0, 0.0], [1.0, -1.0, 1.0], [1.0, 0.0, -1.0]]))[0]
COVARIANCE = ROTATION @ torch.diag(torch.tensor([0.03, 1.0, 0.4]) ** 2) @ ROTATION.T
MEAN = torch.tensor([0.5, -1.0, 2.0])


def factor_of(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower entries of P, log-variances) with cov^-1 = P^T diag(exp(-log_var)) P.

    The precision as T^T T with T lower-triangular is the Cholesky factor of the precision with
    its axes reversed, reversed back and transposed; P is T with unit diagonal.
    """
    precision = torch.linalg.inv(cov.double())
    t = torch.linalg.cholesky(precision.flip(0, 1)).flip(0, 1).T
    diag = torch.diagonal(t)
    p = t / diag.unsqueeze(1)
    assert torch.allclose(p.T @ torch.diag(diag**2) @ p, precision, atol=1e-8)
    rows, cols = tril_index(len(cov))
    return p[rows, cols].float(), (-2.0 * diag.log()).float()


def constant_decoder(model: VAE, mean: torch.Tensor, cov: torch.Tensor) -> None:
    """Make p(x|z) = N(mean, cov) for every z (normalised coordinates)."""
    lower, log_var = factor_of(cov)
    with torch.no_grad():
        model.decoder[-1].weight.zero_()
        model.decoder[-1].bias.copy_(torch.cat([mean, log_var, lower]))


def test_density_is_the_multivariate_normal_it_parameterises() -> None:
    model = VAE(data_dim=3, latent_dim=3, hidden_dims=[8], decoder_covariance="full")
    constant_decoder(model, MEAN, COVARIANCE)
    x = MEAN + torch.randn(50, 3) * 0.5
    want = torch.distributions.MultivariateNormal(MEAN, COVARIANCE).log_prob(x)
    got = model.log_likelihood(x, torch.randn(50, 3))
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-4)
    # The same residuals under the diagonal head with the same outputs: not that density.
    diag = VAE(data_dim=3, latent_dim=3, hidden_dims=[8], decoder_covariance="diag")
    with torch.no_grad():
        diag.decoder[-1].weight.zero_()
        diag.decoder[-1].bias.copy_(model.decoder[-1].bias[:6])
    assert (diag.log_likelihood(x, torch.randn(50, 3)) - want).abs().max() > 1.0


def test_samples_have_the_covariance_in_data_coordinates() -> None:
    scale = torch.tensor([2.0, 0.5, 10.0])
    model = VAE(data_dim=3, latent_dim=3, hidden_dims=[8], decoder_covariance="full",
                data_shift=[1.0, 2.0, 3.0], data_scale=scale.tolist())
    constant_decoder(model, MEAN, COVARIANCE)
    torch.manual_seed(0)
    x = model.sample(200_000)
    torch.testing.assert_close(x.mean(0), MEAN * scale + torch.tensor([1.0, 2.0, 3.0]),
                               atol=0.02, rtol=0)
    want = torch.diag(scale) @ COVARIANCE @ torch.diag(scale)
    torch.testing.assert_close(torch.cov(x.T), want, atol=0.02 * float(want.abs().max()), rtol=0)
    # Along the thin direction the samples are as thin as asked (std 0.03 normalised).
    thin = ((x - x.mean(0)) / scale) @ ROTATION[:, 0]
    assert float(thin.std()) == pytest.approx(0.03, rel=0.02)


def test_whiten_and_unwhiten_invert_each_other() -> None:
    gen = torch.Generator().manual_seed(1)
    lower, r = torch.randn(64, 10, generator=gen), torch.randn(64, 5, generator=gen)
    torch.testing.assert_close(whiten(unwhiten(r, lower), 0.0, lower), r, atol=1e-4, rtol=1e-4)
    # CUDA's deterministic form (a matmul with the row selector) is the same sum.
    torch.testing.assert_close(whiten(r, 0.0, lower, tril_index(5), row_selector(5), matmul=True),
                               whiten(r, 0.0, lower, matmul=False), atol=1e-5, rtol=1e-5)
    assert torch.equal(whiten(r, 0.0, None), r) and unwhiten(r, None) is r


def test_whiten_is_the_unit_lower_triangular_matrix_it_names() -> None:
    """``whiten`` = P (x - mean) with P's strictly-lower entries in ``tril_index`` order: the
    inverse-pair test above passes for P^T or a mis-ordered P too, as long as both agree."""
    gen = torch.Generator().manual_seed(2)
    x, mean = torch.randn(8, 4, generator=gen), torch.randn(8, 4, generator=gen)
    lower = torch.randn(8, 6, generator=gen)
    rows, cols = tril_index(4)
    p = torch.eye(4).repeat(8, 1, 1)
    p[:, rows, cols] = lower
    want = (p @ (x - mean).unsqueeze(-1)).squeeze(-1)
    for matmul in (False, True):
        torch.testing.assert_close(whiten(x, mean, lower, matmul=matmul), want)
    torch.testing.assert_close(unwhiten(want, lower), x - mean, atol=1e-5, rtol=1e-5)


def test_full_head_starts_as_the_diagonal_head_and_adds_the_lower_triangle() -> None:
    torch.manual_seed(0)
    full = VAE(data_dim=4, latent_dim=4, hidden_dims=[8], decoder_covariance="full",
               decoder_init_log_var=-6.0)
    assert full.decoder[-1].out_features == 2 * 4 + 6
    assert VAE(data_dim=4, latent_dim=4, hidden_dims=[8]).decoder[-1].out_features == 8
    z = torch.randn(5, 4)
    _, log_var, lower = full.decode_dist(z)
    assert torch.equal(lower, torch.zeros(5, 6)) and torch.allclose(log_var, torch.full_like(
        log_var, -6.0), atol=1.0)
    # A checkpoint written before the option existed has no such hyper-parameter: diagonal.
    assert not VAE(data_dim=4, latent_dim=4).full_cov
    assert not VAE(data_dim=4, likelihood="sigmoid", decoder_covariance="full").full_cov


def thin_rotated_mixture(n: int, seed: int) -> torch.Tensor:
    """Two 2-D components at (-1, 0) and (1, 0), each thin (std 0.03) along a diagonal and wide
    (std 0.5) across it, the two at right angles: no axis-aligned noise fits either."""
    gen = torch.Generator().manual_seed(seed)
    eps = torch.randn(n, 2, generator=gen) * torch.tensor([0.5, 0.03])
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    rot = torch.tensor([[c, -s], [s, c]])
    side = torch.randint(0, 2, (n,), generator=gen)
    pts = torch.where(side.unsqueeze(1).bool(), eps @ rot.T, eps @ rot)
    return pts + torch.stack([2.0 * side - 1.0, torch.zeros(n)], dim=1)


def true_log_prob(x: torch.Tensor) -> torch.Tensor:
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    rot = torch.tensor([[c, -s], [s, c]])
    cov = torch.diag(torch.tensor([0.5, 0.03]) ** 2)
    parts = [torch.distributions.MultivariateNormal(torch.tensor([m, 0.0]), r @ cov @ r.T)
             .log_prob(x) for m, r in ((-1.0, rot.T), (1.0, rot))]
    return torch.logsumexp(torch.stack(parts), dim=0) - math.log(2.0)


def nll_gap_after_training(covariance: str, epochs: int = 40) -> float:
    torch.manual_seed(0)
    x, x_test = thin_rotated_mixture(4000, seed=0), thin_rotated_mixture(2000, seed=1)
    model = VAE(data_dim=2, latent_dim=2, hidden_dims=[64, 64], prior="mog",
                prior_components=8, decoder_covariance=covariance, decoder_init_log_var=-6.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(128):
            loss = model.loss_terms(x[idx], kl_weight=min(1.0, (epoch + 1) / 10))["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    return float(true_log_prob(x_test).mean() - model.log_prob(x_test, k=64).mean())


def test_full_head_learns_thin_rotated_components_the_diagonal_head_rounds() -> None:
    """Same data, same steps, same seed: the full head's held-out NLL gap is a fraction of the
    diagonal head's (measured 0.09 vs 2.4 nats)."""
    full, diag = nll_gap_after_training("full"), nll_gap_after_training("diag")
    assert full < 0.15 and diag > 2.0 * full, (full, diag)


def test_memory_estimates_count_the_lower_triangle() -> None:
    hidden = [128, 128]
    assert shapes.lower_outputs(10, True) == 45 and shapes.lower_outputs(10, False) == 0
    diag = chunks.sample_bytes_per_row(100, 100, hidden)
    full = chunks.sample_bytes_per_row(100, 100, hidden, full_cov=True)
    assert full - diag >= 2 * 100 * 100 * 4  # two float32 (D, D) factors per sample
    assert chunks.rows_per_chunk(full, 100_000) < chunks.rows_per_chunk(diag, 100_000)
    assert chunks.iwae_bytes_per_point(64, 3, 3, hidden, True) > \
        chunks.iwae_bytes_per_point(64, 3, 3, hidden)
