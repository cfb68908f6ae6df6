"""Memory and work: what a run will need, what the machine has, how big an evaluation chunk
may be and how many draws an evaluation pass may make.

A size that cannot fit (``data.n_samples=2000000000``) used to start allocating and swap for
minutes before dying; an evaluation pass of a large latent with many prior components held
gigabytes at once. Three jobs live here, all plain arithmetic (no torch, so the config check
stays fast and runs before anything is allocated):

- ``check_memory`` estimates the peak resident memory of a run from its config and refuses,
  in one line naming the setting that costs the most, a run that cannot fit in the memory
  available now (``MemAvailable``, or the cgroup's limit when that is lower).
- ``rows_per_chunk`` turns a fixed byte budget into a row count for the chunked evaluation
  passes. The budget is a constant, not a share of the free memory, so the chunks (and with
  them the order of random draws) are the same on every machine and under any load: the same
  checkpoint gives the same numbers everywhere.
- ``affordable`` turns a fixed budget of multiply-adds (``EVAL_WORK_BUDGET``) into the draws
  of one evaluation pass, so the evaluation's time follows the cost of one sample rather than
  a fixed million of them.

The estimate is deliberately simple: a sum over the big arrays with the temporaries that live
beside them, plus the interpreter with torch and Lightning loaded. ``GMM_VAE_MEMORY_CHECK=0``
turns the refusal off for a user who knows better (e.g. a machine with ample swap).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gmm_vae.errors import ConfigError
from gmm_vae.shapes import auto_latent_dim, decoder_outputs, lower_outputs, uses_full_covariance

MiB = 2**20
GiB = 2**30

# Bytes one evaluation pass may hold at once (IWAE, sampling, coverage, prior log-density).
# Fixed so that chunk sizes, and the random draws that follow them, never depend on the machine.
EVAL_CHUNK_BYTES = 512 * MiB
# The mixture prior's (rows, C, L) temporaries: small enough to stay in cache and for the
# allocator to reuse its blocks (large chunks measured several times slower).
PRIOR_CHUNK_BYTES = 4 * MiB
# Python with numpy, torch, Lightning, scikit-learn and openTSNE imported (measured ~0.55 GiB
# RSS for a debug=tiny run on CPU; rounded up).
BASE_BYTES = 700 * MiB
ENV_SWITCH = "GMM_VAE_MEMORY_CHECK"

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

# Multiply-adds one pass of the evaluation may spend: the model's coverage draw with its
# scoring, a truth draw with its scoring (the perfect-sampler reference), the IWAE bound. About
# 10 s at the ~3 GFLOP/s these passes reach on one CPU core. Every mixture of the benchmark
# suite keeps its full counts under it (its costliest pass, the 10-D 8-component mixture's
# million coverage draws, is 2.7e10), so their numbers do not move; where one sample costs
# more (D >= 20: the full-covariance head's D(D-1)/2 outputs and (D, D) solve per draw, K
# products of D x D per score) a pass draws fewer, and its time follows the work instead of
# growing as D^2 times a fixed million. Like the chunk budget, a constant: the counts, and
# with them the numbers, are the same on every machine.
EVAL_WORK_BUDGET = 3e10


def model_draw_work(latent_dim: int, data_dim: int, hidden: list[int], likelihood: str,
                    full_cov: bool) -> float:
    """Multiply-adds of one draw of p(x|z): the decoder's layers, and for the full-covariance
    head the unit-triangular solve with its (D, D) factor."""
    sizes = [latent_dim, *reversed(hidden), decoder_outputs(data_dim, likelihood, full_cov)]
    layers = sum(a * b for a, b in itertools.pairwise(sizes))
    return float(layers + (data_dim * data_dim if full_cov else 0))


def truth_draw_work(n_components: int, dim: int) -> float:
    """Multiply-adds of one truth draw scored against the mixture: the affine map of the draw,
    then one (D, D) product per component (its Mahalanobis distance)."""
    return float(dim * dim + score_work(n_components, dim))


def score_work(n_components: int, dim: int) -> float:
    """Multiply-adds of scoring one sample: a (D, D) product and a dot per component."""
    return float(n_components * dim * (dim + 1))


def affordable(requested: int, work_per_row: float, floor: int = 0,
               budget: float = EVAL_WORK_BUDGET) -> int:
    """Rows a pass draws: ``requested``, or as many as ``budget`` pays for at ``work_per_row``
    multiply-adds each, never fewer than ``floor`` (nor more than ``requested``)."""
    paid = int(budget // max(1.0, float(work_per_row)))
    return int(min(int(requested), max(int(floor), paid)))


def coverage_bytes_per_row(n_components: int, dim: int) -> float:
    """Bytes per sample of one coverage chunk: the (N, K) distances and a (D, N) solve."""
    return _F64 * (2.0 * n_components + 3.0 * dim)


@dataclass
class Estimate:
    """Peak resident bytes of a run, and what each setting contributes to it."""

    total: int
    parts: dict[str, int] = field(default_factory=dict)

    def largest(self) -> str:
        """The setting that costs the most: the one a refusal asks the user to lower."""
        return max(self.parts, key=lambda k: self.parts[k])


def _spec_shape(spec_path: str) -> tuple[int, int] | None:
    """(K, D) of a spec file, or None when it cannot be read (its own check reports why)."""
    try:
        import yaml

        with open(spec_path) as f:
            raw = yaml.safe_load(f)
        return len(raw["means"]), len(raw["means"][0])
    except Exception:  # malformed specs get their one-line error from GMM.from_yaml
        return None


def _param_count(data_dim: int, latent_dim: int, hidden: list[int], likelihood: str,
                 prior: str, prior_components: int, flow_hidden: int,
                 flow_transforms: int, full_cov: bool = False) -> int:
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


def estimate_run(cfg: Any, dim: int | None = None) -> Estimate:
    """Peak resident bytes of ``python train.py`` with ``cfg`` (a composed, validated config).

    The big arrays: the three data sets (float64 points, labels, float32 copies, the
    normalisation's temporaries, each epoch's shuffled copy), the model with its gradients and
    Adam state, one training step's activations, and the end-of-run evaluation (samples and
    coverage draws in float64, the truth's coverage draw beside them, one budgeted chunk).
    """
    data, model, analysis = cfg.data, cfg.model, cfg.analysis
    k: int = int(data.n_components)
    if dim is None and data.spec_path:
        shape = _spec_shape(str(data.spec_path))
        if shape is not None:
            k, dim = shape
    d = int(dim if dim is not None else data.dim)
    latent = int(model.latent_dim) if model.latent_dim is not None else auto_latent_dim(d)
    full_cov = uses_full_covariance(str(model.likelihood), model.get("decoder_covariance"))
    hidden = [int(h) for h in model.hidden_dims]
    prior_c = int(model.prior_components) if model.prior == "mog" else 0

    parts: dict[str, int] = {}
    # Train split: x float64 + labels + a float64 temporary (normalisation) + float32 tensor,
    # plus each epoch's permutation and shuffled float32 copy.
    parts["data.n_samples"] = int(data.n_samples) * (d * (_F64 * 2 + _F32 * 2) + _I64 * 2)
    for key in ("n_val", "n_test"):
        parts[f"data.{key}"] = int(data[key]) * (d * (_F64 * 2 + _F32) + _I64)
    def params_with(latent_units: int) -> int:
        return _param_count(d, latent_units, hidden, str(model.likelihood), str(model.prior),
                            int(model.prior_components), int(model.flow_hidden),
                            int(model.flow_transforms), full_cov)

    # Weights, gradients and Adam's two moments, float32; the best/last checkpoints copy them.
    # What the latent's width adds is booked under it, so a huge latent names itself.
    params, params_narrow = params_with(latent), params_with(1)
    parts["model.hidden_dims"] = params_narrow * _F32 * 5
    batch = min(int(data.batch_size), int(data.n_samples))
    # One training step keeps every activation for backward (~3 copies of the widest layers),
    # and the mixture prior's Monte-Carlo KL its (B, C, L) terms.
    parts["data.batch_size"] = int(batch * _F32 * 3 * (2 * sum(hidden) + 4 * d
                                                       + 3 * lower_outputs(d, full_cov)))
    parts["model.latent_dim"] = int((params - params_narrow) * _F32 * 5
                                    + batch * _F32 * (3 * 4 * latent + 6 * prior_c * latent))

    if analysis.evaluate_at_end:
        n_eval, n_cov = int(analysis.eval_samples), int(analysis.coverage_samples)
        work = (model_draw_work(latent, d, hidden, str(model.likelihood), full_cov)
                + score_work(k, d))
        n_cov = affordable(max(n_cov, n_eval), work, floor=n_eval)  # what the evaluation draws
        # The model's coverage draw (float64) and its concatenation, then the truth's draw
        # (points, labels, noise) and its concatenation beside it; one budgeted chunk.
        parts["analysis.coverage_samples"] = n_cov * (4 * _F64 * d + 3 * _I64)
        parts["analysis.eval_samples"] = n_eval * (3 * _F64 * d + _I64)
        # The largest chunk of the budgeted passes (IWAE, sampling, coverage), as actually cut.
        iwae = iwae_bytes_per_point(int(analysis.iwae_samples), latent, d, hidden, full_cov)
        sample = sample_bytes_per_row(latent, d, hidden, full_cov)
        cover = coverage_bytes_per_row(int(k), d)
        parts["evaluation chunk"] = int(max(
            rows_per_chunk(iwae, 4096) * iwae, rows_per_chunk(sample, 100_000) * sample,
            rows_per_chunk(cover, 200_000) * cover))
    parts["analysis.n_samples"] = int(analysis.n_samples) * (4 * _F64 * d + 2 * _I64 + 64)
    total = BASE_BYTES + sum(parts.values())
    return Estimate(total=int(total), parts=parts)


def available_bytes() -> int | None:
    """Memory a new allocation can use now: MemAvailable, capped by a cgroup limit; None if
    unknown (then nothing is refused)."""
    avail: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        avail = None
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            avail = None
    limit = _cgroup_room()
    if limit is not None:
        avail = limit if avail is None else min(avail, limit)
    return avail


def _cgroup_room() -> int | None:
    """Bytes left under a cgroup v2 memory limit, or None without one."""
    base = Path("/sys/fs/cgroup")
    try:
        raw = (base / "memory.max").read_text().strip()
        if raw == "max":
            return None
        used = int((base / "memory.current").read_text().strip())
        return max(0, int(raw) - used)
    except (OSError, ValueError):
        return None


def _fmt(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB / 10 else f"{n / MiB:.0f} MiB"


def check_memory(cfg: Any, dim: int | None = None, available: int | None = None) -> Estimate:
    """Refuse, with one line naming the costliest setting, a run that cannot fit in memory.

    Raises ``ConfigError`` when the estimate exceeds ``available`` (by default what the machine
    has free now); returns the estimate otherwise. ``GMM_VAE_MEMORY_CHECK=0`` skips the refusal.
    """
    estimate = estimate_run(cfg, dim)
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return estimate
    avail = available_bytes() if available is None else available
    if avail is None or estimate.total <= avail:
        return estimate
    part = estimate.largest()
    if part == "evaluation chunk":  # a fixed cost; only a tiny machine gets here
        raise ConfigError(
            f"analysis.evaluate_at_end: the final evaluation does not fit in the memory "
            f"available: this run needs about {_fmt(estimate.total)} "
            f"({_fmt(estimate.parts[part])} of it for one evaluation chunk), {_fmt(avail)} is "
            f"free; set analysis.evaluate_at_end=false or {ENV_SWITCH}=0 to try anyway")
    raise ConfigError(
        f"{part} is too large for the memory available: this run needs about "
        f"{_fmt(estimate.total)} ({_fmt(estimate.parts[part])} of it for {part}), "
        f"{_fmt(avail)} is free; lower {part} or set {ENV_SWITCH}=0 to try anyway "
        f"(got {_select(cfg, part)})"
    )


def _select(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return list(node) if not isinstance(node, str | int | float | bool) else node
