"""The architecture's arithmetic, stated once: latent size, decoder outputs, log-variance bounds.

The model builds its layers from these, the memory estimate counts them, the config validates
against them; none may keep its own copy (an auto rule or an output count that drifted in one
place would size memory for a model that is not the one trained).
"""

from __future__ import annotations

import itertools

# Bounds on the decoder's log-variance: below, the likelihood can blow up on a single point;
# above, the decoder could explain everything as noise.
MIN_LOG_VAR, MAX_LOG_VAR = -12.0, 6.0


def auto_latent_dim(data_dim: int) -> int:
    """``model.latent_dim=null``: max(2, D), one latent unit per data direction.

    With D - 1 the decoder's learned noise has to stand in for the last direction; where that
    direction holds separate modes (a 3-D grid of tight components) noise cannot represent
    them, and the model smears them: measured on the 27-mode cube, HQ 0.90 of a perfect
    sampler's with D - 1, 0.996 with D (docs/fidelity.md).
    """
    return max(2, int(data_dim))


def uses_full_covariance(likelihood: str, decoder_covariance: str | None) -> bool:
    """Whether p(x|z) has a full covariance: only the Gaussian head has one to choose."""
    return likelihood == "gaussian" and decoder_covariance == "full"


def lower_outputs(data_dim: int, full_cov: bool) -> int:
    """Decoder outputs the full-covariance head adds: the precision factor's lower triangle."""
    return data_dim * (data_dim - 1) // 2 if full_cov else 0


def decoder_outputs(data_dim: int, likelihood: str, full_cov: bool) -> int:
    """The decoder's last layer: mean (and log-variance for the Gaussian head), and the
    full-covariance head's lower-triangle entries."""
    out = 2 * data_dim if likelihood == "gaussian" else data_dim
    return out + lower_outputs(data_dim, full_cov)


def param_count(data_dim: int, latent_dim: int, hidden: list[int], likelihood: str,
                prior: str, prior_components: int, flow_hidden: int,
                flow_transforms: int, full_cov: bool = False) -> int:
    """Trainable parameters of the VAE with its prior: what the memory estimate books for the
    weights, their gradients and Adam's moments."""
    def mlp(sizes: list[int]) -> int:
        return sum((a + 1) * b for a, b in itertools.pairwise(sizes))

    out = decoder_outputs(data_dim, likelihood, full_cov)
    n = mlp([data_dim, *hidden, 2 * latent_dim]) + mlp([latent_dim, *reversed(hidden), out])
    if prior == "mog":
        n += prior_components * (2 * latent_dim + 1)
    elif prior == "flow":
        # zuko NSF: per transform an MLP (L -> h -> h -> L * (3 * bins - 1)), bins = 8.
        n += flow_transforms * mlp([latent_dim, flow_hidden, flow_hidden, latent_dim * 23])
    return n
