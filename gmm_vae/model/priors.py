"""Priors p(z) over the latent space: standard normal, learned mixture, normalising flow.

Each prior exposes ``log_prob(z) -> (B,)`` and ``sample(n) -> (n, L)``; only the standard normal
has a closed-form KL against a Gaussian posterior, which the loss uses when it can.
"""

from __future__ import annotations

import math

import torch
import zuko
from torch import nn

from gmm_vae.chunks import PRIOR_CHUNK_BYTES, mixture_log_prob_bytes_per_row, rows_per_chunk

_LOG_2PI = math.log(2.0 * math.pi)


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I): the study's prior."""

    has_analytic_kl = True

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.marginal_log_prob(z).sum(dim=-1)

    def marginal_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """(B, L) log density of each coordinate under the prior's 1-D marginal."""
        return -0.5 * (z.pow(2) + _LOG_2PI)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        anchor = self._anchor
        return torch.randn(n, self.latent_dim, device=anchor.device, dtype=anchor.dtype,
                           generator=generator)


class MixturePrior(nn.Module):
    """p(z) = sum_c pi_c N(mu_c, diag sigma_c^2) with every parameter learned.

    A multi-modal prior lets separated data modes map to separated latent modes instead of being
    squeezed through one Gaussian, which is what smears mass between modes.
    """

    has_analytic_kl = False

    def __init__(self, latent_dim: int, n_components: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        # Spread the initial means so components do not start identical (symmetry breaking).
        g = torch.Generator().manual_seed(0)
        self.means = nn.Parameter(torch.randn(n_components, latent_dim, generator=g))
        self.log_scales = nn.Parameter(torch.full((n_components, latent_dim), -0.5))
        self.logits = nn.Parameter(torch.zeros(n_components))

    def _components(self) -> torch.distributions.Distribution:
        # No argument validation: it checks values on the host (a sync per step, and no CUDA
        # graph can hold it), and these parameters are valid by construction; a non-finite
        # one makes the loss non-finite, which NaNGuard reports.
        d = torch.distributions
        base = d.Normal(self.means, self.log_scales.exp(), validate_args=False)
        comp = d.Independent(base, 1, validate_args=False)
        mix = d.Categorical(logits=self.logits, validate_args=False)
        return d.MixtureSameFamily(mix, comp, validate_args=False)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """(N,) log p(z). With gradients (a training batch): ``MixtureSameFamily``.

        Without gradients (the IWAE bound of the evaluation: N = k x points rows) the same
        formula is written out and run in row chunks of at most ``PRIOR_CHUNK_BYTES`` of
        (C, L) terms. ``MixtureSameFamily`` materialised all (N, C, L) values at once and
        re-checked them: for a 50-d latent with 64 components that was 3.4 GB per temporary and
        ~30 s per 4096 test points; the chunked form gives the same numbers, bit for bit
        (``tests/test_edges.py``), in bounded memory and far less time (24 s -> 1.5 s measured).
        """
        if torch.is_grad_enabled() or z.dim() != 2:
            return self._components().log_prob(z)
        n_comp, latent = self.means.shape
        rows = rows_per_chunk(mixture_log_prob_bytes_per_row(n_comp, latent), cap=max(1, len(z)),
                              budget=PRIOR_CHUNK_BYTES)
        # The operations of Normal.log_prob, Independent and MixtureSameFamily, in their order.
        scale = self.log_scales.exp()
        var, log_scale = scale**2, scale.log()
        logits = self.logits - self.logits.logsumexp(dim=-1, keepdim=True)
        log_mix = torch.log_softmax(logits, dim=-1)
        const = math.log(math.sqrt(2 * math.pi))
        parts = []
        for part in z.split(rows):
            lp = (-((part.unsqueeze(-2) - self.means) ** 2) / (2 * var) - log_scale - const)
            parts.append(torch.logsumexp(lp.sum(-1) + log_mix, dim=-1))
        return torch.cat(parts) if parts else z.new_empty(0)

    def marginal_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """(B, L) log density of each coordinate under the prior's 1-D marginal (a mixture)."""
        scales = self.log_scales.exp()
        per = torch.distributions.Normal(self.means, scales).log_prob(z.unsqueeze(-2))  # (B,C,L)
        log_pi = self.logits.log_softmax(dim=0).unsqueeze(-1)
        return torch.logsumexp(per + log_pi, dim=-2)

    @torch.no_grad()
    def refit(self, z: torch.Tensor, seed: int) -> tuple[float, float]:
        """Fit the mixture to latent samples ``z`` by EM; keep it if it fits them better.

        Trained by gradient steps alone, the mixture gets stuck with a component straddling
        two clusters of posteriors: it puts prior mass in the hole between them, and every
        sample drawn there decodes off-mode (docs/fidelity.md, "Holes in the prior"). EM from
        a k-means start does not get stuck there. ``z`` should be samples of the aggregate posterior
        q(z) = mean_x q(z|x): the prior that maximises the ELBO's E_q[log p(z)] term.
        Returns the mean log p(z) before and after (after >= before).
        """
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import GaussianMixture

        n_comp = self.means.shape[0]
        before = float(self.log_prob(z).mean())
        if len(z) < n_comp:
            return before, before
        gm = GaussianMixture(n_comp, covariance_type="diag", reg_covar=1e-6, max_iter=100,
                             random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm.fit(z.detach().double().cpu().numpy())
        params = (self.means, self.log_scales, self.logits)
        old = [p.detach().clone() for p in params]
        new = (gm.means_, 0.5 * torch.from_numpy(gm.covariances_).log(),
               torch.from_numpy(gm.weights_).clamp(min=1e-12).log())  # no -inf logit
        for param, value in zip(params, new, strict=True):
            param.copy_(torch.as_tensor(value, dtype=param.dtype, device=param.device))
        after = float(self.log_prob(z).mean())
        if not after > before:
            for param, value in zip(params, old, strict=True):
                param.copy_(value)
            return before, before
        return before, after

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        probs = self.logits.softmax(dim=0)
        idx = torch.multinomial(probs, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.latent_dim, device=probs.device, dtype=probs.dtype,
                          generator=generator)
        return self.means[idx] + eps * self.log_scales.exp()[idx]


class FlowPrior(nn.Module):
    """p(z) = a neural spline flow (zuko) over N(0, I): as flexible as the latent needs."""

    has_analytic_kl = False

    def __init__(self, latent_dim: int, transforms: int, hidden: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.flow = zuko.flows.NSF(features=latent_dim, transforms=transforms,
                                   hidden_features=(hidden, hidden))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.flow().log_prob(z)

    def marginal_log_prob(self, z: torch.Tensor) -> None:
        """A flow's 1-D marginals have no closed form: per-dimension KL is not reported."""
        return None

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        # zuko samples from torch's global RNG; callers seed it for reproducibility.
        return self.flow().sample((n,))


def build_prior(
    kind: str, latent_dim: int, n_components: int = 16, transforms: int = 3, hidden: int = 64
) -> nn.Module:
    """The prior named by ``model.prior``."""
    if kind == "standard":
        return StandardNormalPrior(latent_dim)
    if kind == "mog":
        return MixturePrior(latent_dim, n_components)
    if kind == "flow":
        return FlowPrior(latent_dim, transforms, hidden)
    raise ValueError(f"model.prior must be one of standard, mog, flow (got {kind!r})")
