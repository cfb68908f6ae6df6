"""The VAE as a plain ``torch.nn.Module``: dense ReLU encoder/decoder, a likelihood head, a prior.

Usable without Lightning (build it, step an optimiser on ``loss_terms``, ``sample``); the
training mechanics live in ``gmm_vae.model.training``, which holds one of these as its ``vae``.

Two coordinate systems meet here. The networks (``encode``, ``decode``, ``encode_and_sample``)
work in the normalised coordinates the data module trains on. Everything meant for a user
(``sample``, ``embed``, ``log_prob``) takes or returns data coordinates, using the normaliser
stored as buffers, so a checkpoint alone reproduces samples in the units of the mixture.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gmm_vae.chunks import iwae_bytes_per_point, rows_per_chunk
from gmm_vae.model.losses import (
    gaussian_log_likelihood,
    gaussian_log_likelihood_per_dim,
    kl_standard_normal,
    mse_implied_log_var,
    mse_reconstruction,
    residual_log_likelihood_per_dim,
    row_selector,
    tril_index,
    unwhiten,
    whiten,
)
from gmm_vae.model.priors import build_prior
from gmm_vae.shapes import MAX_LOG_VAR, MIN_LOG_VAR, decoder_outputs, uses_full_covariance

# Points whose posterior samples the mixture prior is refitted to (EM cost grows with them).
PRIOR_REFIT_POINTS = 20_000


@dataclass(frozen=True)
class VAEConfig:
    """The VAE's constructor arguments as given: ``VAE(**dataclasses.asdict(vae.config))``
    builds the same architecture (with fresh weights)."""

    data_dim: int
    latent_dim: int
    hidden_dims: tuple[int, ...]
    likelihood: str
    decoder_covariance: str
    mse_reduction: str
    prior: str
    prior_components: int
    flow_transforms: int
    flow_hidden: int
    free_bits: float
    decoder_init_log_var: float
    cap_log_var: bool
    data_shift: tuple[float, ...] | None
    data_scale: tuple[float, ...] | None


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """A dense VAE whose samples can be judged against the true mixture.

    ``free_bits``: the KL floor per latent unit (nats) of ``loss_terms``. ``cap_log_var``:
    p(x|z)'s log-variance is capped at the ``log_var_ceiling`` buffer, which a training
    warm-up raises epoch by epoch (``set_log_var_ceiling``). ``data_shift`` / ``data_scale``:
    the data module's normaliser, x_normalised = (x - shift) / scale.
    """

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 2,
        hidden_dims: Sequence[int] = (128, 128),
        likelihood: str = "gaussian",
        decoder_covariance: str = "diag",
        mse_reduction: str = "sum",
        prior: str = "standard",
        prior_components: int = 16,
        flow_transforms: int = 3,
        flow_hidden: int = 64,
        free_bits: float = 0.0,
        decoder_init_log_var: float = 0.0,
        cap_log_var: bool = False,
        data_shift: Sequence[float] | None = None,
        data_scale: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.config = VAEConfig(
            data_dim=int(data_dim), latent_dim=int(latent_dim),
            hidden_dims=tuple(int(h) for h in hidden_dims), likelihood=str(likelihood),
            decoder_covariance=str(decoder_covariance), mse_reduction=str(mse_reduction),
            prior=str(prior), prior_components=int(prior_components),
            flow_transforms=int(flow_transforms), flow_hidden=int(flow_hidden),
            free_bits=float(free_bits), decoder_init_log_var=float(decoder_init_log_var),
            cap_log_var=bool(cap_log_var),
            data_shift=None if data_shift is None else tuple(float(v) for v in data_shift),
            data_scale=None if data_scale is None else tuple(float(v) for v in data_scale))
        hidden = list(hidden_dims)
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.hidden_dims = self.config.hidden_dims
        self.likelihood = likelihood
        # The full-covariance head adds the strictly-lower entries of p(x|z)'s precision
        # factor (losses.whiten): within-component shape need not pass through the code. The
        # argument defaults to diag so that checkpoints written before it existed load as the
        # head they were trained with; the config's default (a new run's) is full.
        self.full_cov = uses_full_covariance(likelihood, decoder_covariance)
        out = decoder_outputs(data_dim, likelihood, self.full_cov)
        # Encoder ends in one linear layer giving [mean, log-variance] of q(z|x).
        self.encoder = mlp([data_dim, *hidden, 2 * latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden), out])
        # Ceiling on the decoder's log-variance (``set_log_var_ceiling``), read when
        # ``cap_log_var``; a buffer so a CUDA graph reads the current value.
        self.register_buffer("log_var_ceiling", torch.tensor(MAX_LOG_VAR), persistent=False)
        self.register_buffer("tril_index", tril_index(data_dim), persistent=False)
        self.register_buffer("row_selector", row_selector(data_dim), persistent=False)
        if likelihood == "gaussian" and decoder_init_log_var:
            # Start p(x|z) narrow: see docs/fidelity.md, "Posterior collapse on the ring".
            with torch.no_grad():
                self.decoder[-1].bias[data_dim:2 * data_dim] = decoder_init_log_var
        if self.full_cov:
            # Start as the diagonal head (P = I); gradients still reach these outputs.
            with torch.no_grad():
                self.decoder[-1].weight[2 * data_dim:] = 0.0
                self.decoder[-1].bias[2 * data_dim:] = 0.0
        self.prior = build_prior(prior, latent_dim, prior_components, flow_transforms,
                                 flow_hidden)
        shift = torch.zeros(data_dim) if data_shift is None else torch.tensor(data_shift)
        scale = torch.ones(data_dim) if data_scale is None else torch.tensor(data_scale)
        self.register_buffer("data_shift", shift.float())
        self.register_buffer("data_scale", scale.float())
        self._mse_log_var = mse_implied_log_var(mse_reduction, data_dim)

    @property
    def device(self) -> torch.device:
        return self.encoder[0].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder[0].weight.dtype

    # ------------------------------------------------------------- networks
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of q(z|x), x in normalised coordinates."""
        mean, log_var = self.encoder(x).chunk(2, dim=-1)
        return mean, log_var.clamp(MIN_LOG_VAR, MAX_LOG_VAR)

    @staticmethod
    def reparameterize(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        """z = mean + sigma * eps: a sample that gradients flow through."""
        return mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)

    def encode_and_sample(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The seed's interface: (posterior mean, posterior variance, reparameterised z)."""
        mean, log_var = self.encode(x)
        return mean, log_var.exp(), self.reparameterize(mean, log_var)

    def decode_params(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of p(x|z) in normalised coordinates.

        For the ``sigmoid`` head the log-variance is the constant its MSE loss implies. For the
        full-covariance head these are the conditional variances along P's whitened axes.
        """
        return self.decode_dist(z)[:2]

    def decode_dist(self, z: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(mean, log-variance, lower) of p(x|z), normalised coordinates.

        ``lower``: the strictly-lower entries of the precision factor P (``losses.whiten``),
        None for a diagonal p(x|z).
        """
        h = self.decoder(z)
        lower = None
        if self.likelihood == "gaussian":
            d = self.data_dim
            mean, raw = h[..., :d], h[..., d:2 * d]
            if self.full_cov:
                lower = h[..., 2 * d:]
            log_var = raw.clamp(MIN_LOG_VAR, MAX_LOG_VAR)
            if self.config.cap_log_var:
                log_var = torch.minimum(log_var, self.log_var_ceiling)
        else:
            mean = torch.sigmoid(h)
            log_var = torch.full_like(mean, self._mse_log_var)
        return mean, log_var, lower

    def set_log_var_ceiling(self, ceiling: float) -> None:
        """Cap p(x|z)'s log-variance at ``ceiling`` (within the model's own bound; ``inf``
        lifts the cap). Read only when the model was built with ``cap_log_var``."""
        self.log_var_ceiling.fill_(min(MAX_LOG_VAR, ceiling))

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(B,) log p(x|z), normalised coordinates, for either Gaussian form of the head."""
        mean, log_var, lower = self.decode_dist(z)
        residual = whiten(x, mean, lower, self.tril_index, self.row_selector)
        return residual_log_likelihood_per_dim(residual, log_var).sum(dim=-1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The seed's interface: the decoder's reconstruction (mean of p(x|z)), normalised."""
        return self.decode_params(z)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct normalised ``x`` through the posterior mean (deterministic)."""
        return self.decode(self.encode(x)[0])

    # --------------------------------------------------------------- loss
    def loss_terms(self, x: torch.Tensor,
                   kl_weight: float | torch.Tensor = 1.0) -> dict[str, torch.Tensor]:
        """``{"loss", "recon", "kl"}``: each per sample (nats), averaged over the batch.

        ``loss`` = recon + ``kl_weight`` * KL (with ``free_bits``' floor): the negative ELBO at
        the default weight of 1. A trainer passes its warm-up's weight; the CUDA-graph step
        passes a device tensor so that a replayed graph reads the current weight.
        """
        mean, log_var = self.encode(x)
        z = self.reparameterize(mean, log_var)
        if self.likelihood == "gaussian":
            recon = -self.log_likelihood(x, z)
        else:
            recon = mse_reconstruction(x, self.decode(z), self.config.mse_reduction)
        if getattr(self.prior, "has_analytic_kl", False):
            kl_dims = kl_standard_normal(mean, log_var)  # (B, L)
            kl = kl_dims.sum(dim=-1)
            fb = self.config.free_bits
            kl_used = kl_dims.mean(dim=0).clamp(min=fb).sum() if fb > 0 else kl.mean()
        else:
            # Single-sample Monte Carlo KL: log q(z|x) - log p(z).
            kl = gaussian_log_likelihood(z, mean, log_var) - self.prior.log_prob(z)
            fb = self.config.free_bits * self.latent_dim
            kl_used = kl.mean().clamp(min=fb) if fb > 0 else kl.mean()
        recon_mean = recon.mean()
        loss = recon_mean + kl_weight * kl_used
        return {"loss": loss, "recon": recon_mean, "kl": kl.mean()}

    @torch.no_grad()
    def refit_prior(self, x: torch.Tensor, seed: int,
                    max_points: int = PRIOR_REFIT_POINTS) -> tuple[float, float]:
        """Refit the mixture prior by EM to one q(z|x) sample per point of normalised ``x``.

        The prior that maximises the ELBO is the aggregate posterior; SGD leaves components
        straddling gaps between posterior clusters, EM does not (docs/fidelity.md, "Holes in
        the prior").
        At most ``max_points`` points (a seeded subset), so the cost stays bounded. Returns the
        mean log p(z) before and after (kept only when it improved). Global RNG untouched.
        """
        gen = torch.Generator().manual_seed(int(seed) % 2**63)
        if len(x) > max_points:
            x = x[torch.randperm(len(x), generator=gen)[:max_points]]
        mean, log_var = self.encode(x.to(self.device, self.dtype))
        eps = torch.randn(mean.shape, generator=gen).to(mean)
        z = mean + torch.exp(0.5 * log_var) * eps
        return self.prior.refit(z, seed=int(seed) % 2**32)

    # ------------------------------------------------ data-coordinate API
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.data_shift) / self.data_scale

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.data_scale + self.data_shift

    @torch.no_grad()
    def sample(self, n: int, include_noise: bool | None = None) -> torch.Tensor:
        """Draw ``n`` points from the model, in data coordinates: z ~ p(z), x ~ p(x|z).

        By default the Gaussian head samples p(x|z) (decoder means alone are too concentrated);
        the sigmoid head returns decoder outputs as the study did. ``include_noise`` overrides.
        """
        noise = self.likelihood == "gaussian" if include_noise is None else include_noise
        z = self.prior.sample(n).to(self.device)
        return self.denormalize(self.decode_sample(z, noise))

    def decode_sample(self, z: torch.Tensor, include_noise: bool = True) -> torch.Tensor:
        """x ~ p(x|z) in normalised coordinates (its mean when ``include_noise`` is false)."""
        x, log_var, lower = self.decode_dist(z)
        if include_noise:
            x = x + unwhiten(torch.exp(0.5 * log_var) * torch.randn_like(x), lower)
        return x

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior means of data-coordinate points: the latent codes the analysis clusters."""
        return self.encode(self.normalize(x.to(self.device, self.dtype)))[0]

    @torch.no_grad()
    def latent_usage(self, x: torch.Tensor) -> dict[str, Any]:
        """How much the latent code is used, on data-coordinate points: collapse diagnostics.

        ``mean_variance``: per latent unit, the variance over the points of the posterior mean
        (Burda et al. 2016 call a unit active when it exceeds 0.01). ``kl``: mean KL(q(z|x) ||
        p(z)) in nats (one-sample Monte Carlo, analytic for the standard prior).
        ``kl_per_dim``: mean KL of each coordinate's posterior against the prior's 1-D marginal
        (None for the flow prior, whose marginals have no closed form). A collapsed posterior
        has every unit inactive and KL near 0: the decoder then ignores z.
        """
        mean, log_var = self.encode(self.normalize(x.to(self.device, self.dtype)))
        z = self.reparameterize(mean, log_var)
        log_q_dims = gaussian_log_likelihood_per_dim(z, mean, log_var)
        if getattr(self.prior, "has_analytic_kl", False):
            kl_dims = kl_standard_normal(mean, log_var)
            kl = kl_dims.sum(dim=-1)
        else:
            kl = log_q_dims.sum(dim=-1) - self.prior.log_prob(z)
            marginal = self.prior.marginal_log_prob(z)
            kl_dims = None if marginal is None else log_q_dims - marginal
        return {
            "mean_variance": mean.var(dim=0).double().cpu().tolist() if len(mean) > 1
            else [0.0] * self.latent_dim,
            "kl": float(kl.mean()),
            "kl_per_dim": None if kl_dims is None
            else kl_dims.mean(dim=0).double().cpu().tolist(),
        }

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, k: int = 64, chunk: int = 4096) -> torch.Tensor:
        """(N,) importance-weighted (IWAE) estimate of log p(x), nats, data coordinates.

        log p(x) >= log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), tight as k grows; the log-Jacobian
        of the normalisation converts the density back to data units. ``chunk`` points at a
        time, fewer when their k importance samples would pass the evaluation's memory budget.
        """
        out = []
        log_jac = torch.log(self.data_scale).sum()
        chunk = rows_per_chunk(iwae_bytes_per_point(k, self.latent_dim, self.data_dim,
                                                    list(self.hidden_dims), self.full_cov),
                               cap=chunk)
        for xb in x.to(self.device, self.dtype).split(chunk):
            xn = self.normalize(xb)
            mean, log_var = self.encode(xn)
            eps = torch.randn(k, *mean.shape, device=mean.device, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * log_var) * eps  # (k, B, L)
            log_px = self.log_likelihood(xn.expand(k, -1, -1).reshape(-1, self.data_dim),
                                         z.reshape(-1, self.latent_dim)).view(k, -1)
            log_pz = self.prior.log_prob(z.reshape(-1, self.latent_dim)).view(k, -1)
            log_qz = gaussian_log_likelihood(z, mean, log_var)
            log_w = log_px + log_pz - log_qz
            out.append(torch.logsumexp(log_w, dim=0) - math.log(k) - log_jac)
        return torch.cat(out)
