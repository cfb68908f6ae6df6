"""The memory policy: what a run will need, and a one-line refusal of one that cannot fit.

A size that cannot fit (``data.n_samples=2000000000``) used to start allocating and swap for
minutes before dying. ``check_memory`` estimates the peak resident memory of a run from its
config and refuses, in one line naming the setting that costs the most, a run that cannot fit
in the memory available now (``gmm_vae.machine``). Plain arithmetic (no torch), so the config
check stays fast and runs before anything is allocated; the per-row costs of the chunked
evaluation passes come from ``gmm_vae.chunks``, the parameter count from ``gmm_vae.shapes``.

The estimate is deliberately simple: a sum over the big arrays with the temporaries that live
beside them, plus the interpreter with torch and Lightning loaded. ``GMM_VAE_MEMORY_CHECK=0``
turns the refusal off for a user who knows better (e.g. a machine with ample swap).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from gmm_vae.chunks import (
    _F32,
    _F64,
    _I64,
    GiB,
    MiB,
    coverage_bytes_per_row,
    iwae_bytes_per_point,
    rows_per_chunk,
    sample_bytes_per_row,
)
from gmm_vae.errors import ConfigError
from gmm_vae.machine import available_bytes
from gmm_vae.shapes import auto_latent_dim, lower_outputs, param_count, uses_full_covariance
from gmm_vae.values import lookup

# Python with numpy, torch, Lightning, scikit-learn and openTSNE imported (measured ~0.55 GiB
# RSS for a debug=tiny run on CPU; rounded up).
BASE_BYTES = 700 * MiB
ENV_SWITCH = "GMM_VAE_MEMORY_CHECK"


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
        return param_count(d, latent_units, hidden, str(model.likelihood), str(model.prior),
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
        n_cov = max(n_cov, n_eval)
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


def _size(n: int) -> str:
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
            f"available: this run needs about {_size(estimate.total)} "
            f"({_size(estimate.parts[part])} of it for one evaluation chunk), {_size(avail)} is "
            f"free; set analysis.evaluate_at_end=false or {ENV_SWITCH}=0 to try anyway")
    raise ConfigError(
        f"{part} is too large for the memory available: this run needs about "
        f"{_size(estimate.total)} ({_size(estimate.parts[part])} of it for {part}), "
        f"{_size(avail)} is free; lower {part} or set {ENV_SWITCH}=0 to try anyway "
        f"(got {_setting(cfg, part)})"
    )



def _setting(cfg: Any, key: str) -> Any:
    """The value of the setting a refusal names, as the user wrote it (a list for a list)."""
    value = lookup(cfg, key)
    return value if isinstance(value, str | int | float | bool) else list(value)
