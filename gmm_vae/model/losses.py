"""ELBO terms, each summed over dimensions per sample (nats) and averaged over the batch.

Summing per sample keeps the numbers comparable across data and latent dimensions and makes
``recon + kl`` a bound on ``-log p(x)`` in nats, which is what the held-out NLL is compared to.
"""

from __future__ import annotations

import math

import torch

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_likelihood_per_dim(x: torch.Tensor, mean: torch.Tensor,
                                    log_var: torch.Tensor) -> torch.Tensor:
    """(B, D) log N(x_d | mean_d, exp(log_var_d)) per dimension: the collapse diagnostics read
    how much each latent unit carries."""
    return residual_log_likelihood_per_dim(x - mean, log_var)


def residual_log_likelihood_per_dim(residual: torch.Tensor,
                                    log_var: torch.Tensor) -> torch.Tensor:
    """(B, D) log N(residual_d | 0, exp(log_var_d)): also the full-covariance head's density
    of a whitened residual (``whiten``)."""
    return -0.5 * (_LOG_2PI + log_var + residual.pow(2) * torch.exp(-log_var))


def gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor,
                            log_var: torch.Tensor) -> torch.Tensor:
    """(B,) log N(x | mean, diag exp(log_var)), summed over dimensions."""
    return gaussian_log_likelihood_per_dim(x, mean, log_var).sum(dim=-1)


def tril_index(dim: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(2, D(D-1)/2) rows and columns of a D x D matrix's strictly-lower entries."""
    return torch.tril_indices(dim, dim, -1, device=device)


def row_selector(dim: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(D(D-1)/2, D) float 0/1: entry k of ``tril_index(D)`` belongs to row ``rows[k]``.

    On CUDA ``whiten`` sums each row's products with it, a matmul, deterministic where
    ``index_add`` would use atomics (whose order, and so rounding, varies run to run).
    """
    rows = tril_index(dim, device)[0]
    return torch.nn.functional.one_hot(rows, dim).float()


def whiten(x: torch.Tensor, mean: torch.Tensor, lower: torch.Tensor | None,
           index: torch.Tensor | None = None, selector: torch.Tensor | None = None,
           matmul: bool | None = None) -> torch.Tensor:
    """``P (x - mean)`` with ``P`` unit lower-triangular, its strictly-lower entries ``lower``.

    The full-covariance head writes p(x|z)'s precision as ``P^T diag(exp(-log_var)) P``: then
    ``log N(x | mean, Sigma)`` is the diagonal Gaussian's log-density of the whitened residual
    (``det P = 1``), a gather and a multiply-add instead of a triangular solve per step.
    ``lower`` ordered as ``tril_index(D)``; None means ``P = I``. Pass ``index`` and
    ``selector`` (``row_selector``) to skip rebuilding them every step. ``matmul``: sum each
    row's terms by a matmul with the selector (None: on CUDA only) rather than ``index_add``.
    """
    r = x - mean
    if lower is None:
        return r
    dim = r.shape[-1]
    rows, cols = tril_index(dim, r.device) if index is None else index
    products = lower * r[..., cols]
    if not (r.device.type == "cuda" if matmul is None else matmul):
        # Sequential on the CPU, so deterministic; the documented numbers were measured with it.
        return r.index_add(-1, rows, products)
    sel = row_selector(dim, r.device) if selector is None else selector
    return r + products @ sel.to(r.dtype)


def unwhiten(noise: torch.Tensor, lower: torch.Tensor | None) -> torch.Tensor:
    """``P^{-1} noise``: turns ``sigma * eps`` into a draw of p(x|z)'s noise (``whiten``'s P).

    Builds the (N, D, D) factor: callers chunk N (``chunks.sample_bytes_per_row``).
    """
    if lower is None:
        return noise
    dim = noise.shape[-1]
    rows, cols = tril_index(dim, noise.device)
    p = torch.eye(dim, dtype=noise.dtype, device=noise.device).expand(
        *noise.shape[:-1], dim, dim).clone()
    p[..., rows, cols] = lower
    return torch.linalg.solve_triangular(p, noise.unsqueeze(-1), upper=False,
                                         unitriangular=True).squeeze(-1)


def mse_reconstruction(x: torch.Tensor, mean: torch.Tensor, reduction: str) -> torch.Tensor:
    """(B,) the study's squared error: summed (``sum``) or averaged (``mean``) over dimensions."""
    sq = (x - mean).pow(2)
    return sq.sum(dim=-1) if reduction == "sum" else sq.mean(dim=-1)


def mse_implied_log_var(reduction: str, dim: int) -> float:
    """The fixed Gaussian variance an MSE loss implies: (1/c)*sum (x-m)^2 == -log N + const.

    With c = 1 (``sum``) sigma^2 = 1/2; with c = D (``mean``) sigma^2 = D/2. Used to give the
    sigmoid/MSE head a proper likelihood for IWAE and for sampling p(x|z).
    """
    c = 1.0 if reduction == "sum" else float(dim)
    return math.log(c / 2.0)


def kl_standard_normal(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """(B, L) closed-form KL(N(mean, exp(log_var)) || N(0, 1)) per latent dimension."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var)

