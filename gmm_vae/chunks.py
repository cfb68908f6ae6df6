"""Chunk and work budgets: how many rows an evaluation pass may hold at once, what one row
costs, and how many draws a pass may make.

The chunked passes (IWAE, sampling, coverage, the mixture prior's log-density) size their
chunks from a fixed byte budget, not from the memory free now, so the chunks (and with them the
order of random draws) are the same on every machine and under any load: the same checkpoint
gives the same numbers everywhere. The per-row costs are plain arithmetic over the
architecture (``gmm_vae.shapes``); the memory estimate (``gmm_vae.resources``) reads them too.
``affordable`` caps the multiply-adds an evaluation pass spends per row asked for
(``WORK_PER_ROW``), so the evaluation's time follows the cost of one sample rather than a fixed
million of them.
"""

from __future__ import annotations

import itertools

from gmm_vae.shapes import decoder_outputs, lower_outputs

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


# ----------------------------------------------------------------------- the work budget

# Multiply-adds an evaluation pass may spend per row it was asked for (a coverage draw with
# its scoring, a truth draw of the perfect-sampler reference, an importance sample of the IWAE
# bound): rows that cost more are drawn in proportion fewer. Every mixture of the benchmark
# suite costs less (its costliest, 10-D with 8 components, 2.7e4 per coverage draw), so its
# counts and numbers do not move; where one sample costs more (D >= 20: the full-covariance
# head's D(D-1)/2 outputs and (D, D) solve per draw, K products of D x D per score) the
# evaluation's time follows the work instead of growing as D^2 times a fixed million. Per row
# asked for, not per pass: a user who asks for 5M coverage draws of a 3-D model gets them. A
# constant, like the chunk budget: the counts, and with them the numbers, are the same on
# every machine. (~3 GFLOP/s on one CPU core: a million default draws take ~6 s.)
WORK_PER_ROW = 3e4


def model_draw_work(latent_dim: int, data_dim: int, hidden: list[int], likelihood: str,
                    full_cov: bool) -> float:
    """Multiply-adds of one draw of p(x|z): the decoder's layers, and for the full-covariance
    head the unit-triangular solve with its (D, D) factor."""
    sizes = [latent_dim, *reversed(hidden), decoder_outputs(data_dim, likelihood, full_cov)]
    layers = sum(a * b for a, b in itertools.pairwise(sizes))
    return float(layers + (data_dim * data_dim if full_cov else 0))


# The truth's affine map runs as an einsum (bit for bit the row-wise map, ``GMM.sample``), not a
# BLAS product: measured 0.68 ns per multiply-add in 200-D against the decoder's 0.20 and the
# Mahalanobis products' 0.07 (one core), so it counts four times.
TRUTH_MAP_COST = 4


def truth_draw_work(n_components: int, dim: int) -> float:
    """Multiply-adds of one truth draw scored against the mixture: the affine map of the draw
    (weighted ``TRUTH_MAP_COST``), then one (D, D) product per component (its Mahalanobis
    distance)."""
    return float(TRUTH_MAP_COST * dim * dim + score_work(n_components, dim))


def score_work(n_components: int, dim: int) -> float:
    """Multiply-adds of scoring one sample: a (D, D) product and a dot per component."""
    return float(n_components * dim * (dim + 1))


def affordable(requested: int, work_per_row: float, floor: int = 0) -> int:
    """Rows a pass draws: all ``requested`` while one costs at most ``WORK_PER_ROW``
    multiply-adds, in proportion fewer beyond, never fewer than ``floor`` (nor more than
    ``requested``): of 1M coverage draws, all for a 3-D model, 575,000 for a 20-D one, 10,558
    in 200-D."""
    share = min(1.0, WORK_PER_ROW / max(1.0, float(work_per_row)))
    return int(min(int(requested), max(int(floor), int(int(requested) * share))))


def coverage_bytes_per_row(n_components: int, dim: int) -> float:
    """Bytes per sample of one coverage chunk: the (N, K) distances and a (D, N) solve."""
    return _F64 * (2.0 * n_components + 3.0 * dim)
