"""Chunk budgets: how many rows an evaluation pass may hold at once, and what one row costs.

The chunked passes (IWAE, sampling, coverage, the mixture prior's log-density) size their
chunks from a fixed byte budget, not from the memory free now, so the chunks (and with them the
order of random draws) are the same on every machine and under any load: the same checkpoint
gives the same numbers everywhere. The per-row costs are plain arithmetic over the
architecture (``gmm_vae.shapes``); the memory estimate (``gmm_vae.resources``) reads them too.
"""

from __future__ import annotations

from gmm_vae.shapes import lower_outputs

MiB = 2**20
GiB = 2**30

# Bytes one evaluation pass may hold at once (IWAE, sampling, coverage, prior log-density).
# Fixed so that chunk sizes, and the random draws that follow them, never depend on the machine.
EVAL_CHUNK_BYTES = 512 * MiB
# The mixture prior's (rows, C, L) temporaries: small enough to stay in cache and for the
# allocator to reuse its blocks (large chunks measured several times slower).
PRIOR_CHUNK_BYTES = 4 * MiB

_F32, _F64, _I64 = 4, 8, 8



def rows_per_chunk(bytes_per_row: float, cap: int, budget: int = EVAL_CHUNK_BYTES) -> int:
    """How many rows of ``bytes_per_row`` fit in ``budget``: at least 1, at most ``cap``.

    ``cap`` is the chunk the code used before budgets existed (4096 IWAE points, 100,000
    samples, 200,000 coverage rows): at default sizes the budget allows more, so the cap keeps
    chunks, and therefore random draws and numbers, exactly what they were.
    """
    return max(1, min(int(cap), int(budget // max(1.0, float(bytes_per_row)))))


def iwae_bytes_per_point(k: int, latent_dim: int, data_dim: int, hidden: list[int],
                         full_cov: bool = False) -> float:
    """Bytes one test point costs in the IWAE bound with ``k`` importance samples.

    Per importance sample: z and its noise, the two widest decoder activations alive at once,
    the decoder's outputs and the point repeated, in float32; with the full-covariance head,
    its lower-triangle outputs and the two temporaries of whitening. The mixture prior's
    (C, L) terms are chunked separately (``MixturePrior.log_prob``) and are not counted here.
    """
    widest = max(hidden) if hidden else 0
    lower = 3.0 * lower_outputs(data_dim, full_cov)
    return k * _F32 * (4.0 * latent_dim + 2.0 * widest + 4.0 * data_dim + 8.0 + lower)


def sample_bytes_per_row(latent_dim: int, data_dim: int, hidden: list[int],
                         full_cov: bool = False) -> float:
    """Bytes one model sample costs while it is drawn (float32 activations, float64 copy);
    the full-covariance head adds its lower-triangle outputs and two (D, D) factors."""
    widest = max(hidden) if hidden else 0
    lower = lower_outputs(data_dim, full_cov) + (2.0 * data_dim**2 if full_cov else 0.0)
    return (_F32 * (3.0 * latent_dim + 2.0 * widest + 6.0 * data_dim + 4.0 + lower)
            + _F64 * data_dim)


def mixture_log_prob_bytes_per_row(n_components: int, latent_dim: int) -> float:
    """Bytes per latent point of a diagonal-mixture log-density: about four (C, L) temporaries."""
    return 4.0 * _F32 * n_components * latent_dim + 2.0 * _F32 * n_components


def coverage_bytes_per_row(n_components: int, dim: int) -> float:
    """Bytes per sample of one coverage chunk: the (N, K) distances and a (D, N) solve."""
    return _F64 * (2.0 * n_components + 3.0 * dim)
