"""Apply every instrument of ``metrics.py`` and ``coverage.py`` to a trained VAE: one dict.

Used by the analysis callbacks (small samples, during training) and by ``evaluate.py`` /
the end of ``train.py`` (the full evaluation written to ``evaluation/``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from gmm_vae.analysis import coverage, metrics, progress
from gmm_vae.analysis.c2st import c2st_with_floor
from gmm_vae.chunks import (
    affordable,
    model_draw_work,
    rows_per_chunk,
    sample_bytes_per_row,
    score_work,
    truth_draw_work,
)
from gmm_vae.config import AnalysisConfig
from gmm_vae.data.gmm import GMM
from gmm_vae.model.vae import VAE


@dataclass
class EvalSettings:
    """What to compute and on how many points (mirrors ``cfg.analysis``)."""

    # Defaults are the config schema's, so the two cannot drift apart.
    n_samples: int = AnalysisConfig.eval_samples
    cluster_points: int = AnalysisConfig.n_samples
    k_max: int | None = AnalysisConfig.k_max  # None: max(10, 2K)
    cluster_criterion: str = AnalysisConfig.cluster_criterion
    hist_bins: int = AnalysisConfig.hist_bins
    peak_height: float = AnalysisConfig.peak_height
    peak_distance: int = AnalysisConfig.peak_distance
    hq_quantile: float = AnalysisConfig.hq_quantile
    hq_threshold: float | None = AnalysisConfig.hq_threshold  # None: the chi2_D quantile
    min_share: float = AnalysisConfig.min_share
    min_capture: float = AnalysisConfig.min_capture
    iwae_samples: int = AnalysisConfig.iwae_samples
    nll_points: int | None = None
    # Samples behind coverage.* (the first n_samples of them are the samples above); None or
    # fewer than n_samples: the same samples as everything else (the callbacks' choice).
    coverage_samples: int | None = AnalysisConfig.coverage_samples
    clusters: bool = True
    nll: bool = True
    nd_modes: bool = True
    c2st: bool = AnalysisConfig.c2st  # the final evaluation's; the callbacks turn it off


@dataclass
class Evaluation:
    """The metrics, and the arrays the figures are drawn from."""

    metrics: dict[str, Any]
    samples: np.ndarray
    truth: np.ndarray
    truth_labels: np.ndarray


def settings_from_cfg(analysis: Any, n_samples: int, **overrides: Any) -> EvalSettings:
    """EvalSettings from a ``cfg.analysis`` node."""
    s = EvalSettings(
        n_samples=n_samples,
        cluster_points=min(int(analysis.n_samples), n_samples),
        k_max=None if analysis.k_max is None else int(analysis.k_max),
        cluster_criterion=str(analysis.cluster_criterion),
        hist_bins=int(analysis.hist_bins),
        peak_height=float(analysis.peak_height),
        peak_distance=int(analysis.peak_distance),
        hq_quantile=float(analysis.hq_quantile),
        hq_threshold=None if analysis.hq_threshold is None else float(analysis.hq_threshold),
        min_share=float(analysis.min_share),
        min_capture=float(analysis.min_capture),
        iwae_samples=int(analysis.iwae_samples),
        coverage_samples=int(analysis.coverage_samples),
        c2st=bool(analysis.c2st),
    )
    for key, value in overrides.items():
        setattr(s, key, value)
    return s


@torch.no_grad()
def _sample(model: VAE, n: int, chunk: int = 100_000) -> np.ndarray:
    """``model.sample(n)`` as float64 numpy, in chunks (a million at once would hold GBs of
    decoder activations), fewer when a wide decoder would pass the memory budget."""
    chunk = rows_per_chunk(sample_bytes_per_row(model.latent_dim, model.data_dim,
                                                list(model.hidden_dims), model.full_cov),
                           cap=chunk)
    parts = [model.sample(min(chunk, n - i)).double().cpu().numpy() for i in range(0, n, chunk)]
    return np.concatenate(parts) if parts else np.empty((0, model.data_dim))


# Truth samples behind the perfect sampler's reference shares: their noise (~0.0005 in TV for
# K = 4) is well under any difference between models. Fewer where the work budget says so
# (``chunks.affordable``: 93,516 in 200-D), never fewer than the samples it judges.
REFERENCE_SAMPLES = 1_000_000
# The fewest test points an IWAE bound the work budget shrinks keeps (all when fewer).
MIN_NLL_POINTS = 100


def draw_work(model: VAE) -> float:
    """Multiply-adds of one model sample (``chunks.model_draw_work``)."""
    return model_draw_work(model.latent_dim, model.data_dim, list(model.hidden_dims),
                           model.likelihood, model.full_cov)


def iwae_work(model: VAE) -> float:
    """Multiply-adds of one importance sample of the IWAE bound: a decode and a prior
    density (a test point's ``k`` of them cost ``k`` times as much, as do its ``k`` rows)."""
    components = model.config.prior_components if model.config.prior == "mog" else 1
    return draw_work(model) + 2.0 * model.latent_dim * components


class CoverageReference(NamedTuple):
    """What a perfect sampler scores in ``mode_coverage``'s bins, measured on the truth."""

    shares: np.ndarray  # (K + 1,): per component (high quality), then off-mode
    median_fraction: float  # share inside the nearest component's median ellipsoid


def coverage_reference(gmm: GMM, threshold: float | None = None, seed: int = 0,
                       n: int = REFERENCE_SAMPLES,
                       quantile: float = coverage.HQ_QUANTILE) -> CoverageReference:
    """A perfect sampler's shares and median-ellipsoid fraction, from ``n`` truth samples,
    under the high-quality rule of ``threshold`` / ``quantile`` (``coverage.hq_radius_sq``)."""
    pts = gmm.sample(n, np.random.default_rng([seed, 96]))[0]
    cov = coverage.mode_coverage(pts, gmm, threshold, quantile=quantile)
    del pts
    return CoverageReference(np.append(cov["shares"], cov["off_mode_share"]),
                             cov["median_fraction"])


def coverage_draws(settings: EvalSettings, gmm: GMM, draw_work_per_row: float) -> int:
    """Samples behind the coverage: ``coverage_samples`` (at least ``n_samples``), as many as
    the work budget pays for at this cost of a draw and its scoring (all of them up to ~20-D),
    never fewer than the samples the other instruments use."""
    n_cov = max(settings.n_samples, settings.coverage_samples or 0)
    return affordable(n_cov, draw_work_per_row + score_work(gmm.n_components, gmm.dim),
                      floor=settings.n_samples)


def _memo(cache: dict[str, Any] | None, key: str, compute: Callable[[], Any]) -> Any:
    """``compute()``, remembered in ``cache`` when one is given."""
    if cache is None:
        return compute()
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def _in_space(counts: dict[str, float | int], space: str) -> dict[str, float | int]:
    """``cluster_count``'s keys named for the space counted in: ``k`` -> ``k_data``."""
    return {f"{key}_{space}": value for key, value in counts.items()}


def evaluate_samples(samples: np.ndarray, gmm: GMM, settings: EvalSettings, seed: int = 0,
                     cache: dict[str, Any] | None = None,
                     coverage_extra: np.ndarray | None = None) -> Evaluation:
    """Every instrument that needs only samples, on ``samples`` against fresh truth draws.

    Why a function of its own: a sampler trained elsewhere (a GAN, a flow, another VAE
    library) is judged by exactly the code that judges the VAE (``evaluate_model`` calls this,
    ``gmm_vae.analysis.judge`` too). ``samples`` are the ``settings.n_samples`` points behind
    everything but the coverage; ``coverage_extra`` more points of the same sampler that only
    the coverage adds. The truth is drawn from ``seed``; ``cache`` as in ``evaluate_model``.
    The result has no ``latent``, ``nll`` or latent cluster counts: they need a model.
    """
    timings: dict[str, float] = {}
    truth, truth_labels = gmm.sample(settings.n_samples, np.random.default_rng([seed, 99]))
    out: dict[str, Any] = {"n_samples": settings.n_samples}
    # A diverged model can emit inf/NaN: they count as low quality in the coverage, and the
    # sample-based instruments (clusters, histograms, distance) use the finite ones.
    finite = np.isfinite(samples).all(axis=1)
    out["nonfinite_fraction"] = float(1.0 - finite.mean())
    usable = samples[finite] if not finite.all() else samples
    if len(usable) < 10:
        raise ValueError(f"only {len(usable)} of {len(samples)} model samples are finite: "
                         "the model has diverged")

    t0 = progress.begin("coverage")
    # Coverage gets its own, larger draw: the weights' error from 10,000 samples is noisy at
    # the 0.006 level, more than the differences between good models. The extra samples come
    # after the ones above in the same streams, so those stay what they were.
    cov_samples = samples if coverage_extra is None else np.concatenate([samples,
                                                                         coverage_extra])
    n_cov = len(cov_samples)
    # The perfect sampler's shares, measured on the truth's own samples (right even where
    # components overlap), from a draw large enough to be a fixed reference.
    hq_rule = {"threshold": settings.hq_threshold, "quantile": settings.hq_quantile}
    n_ref = affordable(REFERENCE_SAMPLES, truth_draw_work(gmm.n_components, gmm.dim),
                       floor=n_cov)
    reference = _memo(cache, "coverage_reference",
                      lambda: coverage_reference(gmm, seed=seed, n=n_ref, **hq_rule))
    cov = coverage.mode_coverage(cov_samples, gmm, min_capture=settings.min_capture,
                                 reference=reference.shares,
                                 reference_median=reference.median_fraction, **hq_rule)
    out["coverage"] = cov
    # The papers' own 3-std rule: a 2-D protocol, compared with published rows.
    out["literature"] = coverage.literature_protocol(cov_samples, gmm)

    def truth_coverage() -> dict[str, Any]:
        # An independent truth draw of the model's size: what a perfect sampler scores here.
        pts = gmm.sample(n_cov, np.random.default_rng([seed, 97]))[0]
        return {k: v for k, v in coverage.mode_coverage(
            pts, gmm, min_capture=settings.min_capture, reference=reference.shares,
            reference_median=reference.median_fraction, **hq_rule).items()
            if k in ("modes_captured", "hq_fraction", "weights_tv", "weights_tv_hq",
                     "median_fraction", "n_samples")}

    out["coverage_truth"] = _memo(cache, "coverage_truth", truth_coverage)
    del cov_samples
    timings["coverage"] = time.perf_counter() - t0

    t0 = progress.begin("distance")
    # A second, independent ground-truth draw of the same size gives the distance's noise
    # floor at this n: a perfect sampler scores about that, not 0.
    def floor() -> float:
        truth2, _ = gmm.sample(settings.n_samples, np.random.default_rng([seed, 98]))
        return metrics.sliced_wasserstein(truth2, truth, seed=seed)

    out["distance"] = {
        "sliced_wasserstein": metrics.sliced_wasserstein(usable, truth, seed=seed),
        "sliced_wasserstein_floor": _memo(cache, "sw_floor", floor),
    }
    timings["distance"] = time.perf_counter() - t0

    if settings.c2st:  # a classifier against the truth, and against a second truth draw
        t0 = progress.begin("c2st")
        truth2 = gmm.sample(settings.n_samples, np.random.default_rng([seed, 98]))[0]
        out["c2st"] = c2st_with_floor(usable, truth, truth2, seed=seed)
        timings["c2st"] = time.perf_counter() - t0

    m = settings.cluster_points
    t0 = progress.begin("modes")
    modes_kw = {"bins": settings.hist_bins, "height": settings.peak_height,
                "distance": settings.peak_distance}
    modes_vae = metrics.identify_modes(usable[:m], **modes_kw)
    modes_gt = _memo(cache, "modes_gt", lambda: metrics.identify_modes(truth[:m], **modes_kw))
    out["modes"] = {
        "vae_samples": modes_vae["flattened"],
        "ground_truth": modes_gt["flattened"],
        "vae_samples_per_axis": modes_vae["per_axis"],
        "ground_truth_per_axis": modes_gt["per_axis"],
    }
    if settings.nd_modes:
        out["modes"]["nd_vae_samples"] = metrics.count_modes(
            usable[:m], settings.min_share, seed=seed)["count"]
        out["modes"]["nd_ground_truth"] = _memo(cache, "nd_gt", lambda: metrics.count_modes(
            truth[:m], settings.min_share, seed=seed)["count"])
    timings["modes"] = time.perf_counter() - t0

    if settings.clusters:  # the points' counts; evaluate_model adds their latent codes'
        t0 = progress.begin("clusters")
        # Samples have no true label: use their nearest true component.
        vae_labels = gmm.mahalanobis_sq(usable[:m]).argmin(axis=1)
        k_max = settings.k_max or metrics.default_k_max(gmm.n_components)
        out["clusters"] = {
            "criterion": settings.cluster_criterion,
            "k_max": k_max,
            "vae_samples": _in_space(metrics.cluster_count(
                usable[:m], k_max, settings.cluster_criterion, vae_labels, seed), "data"),
            # The truth's own clustering does not change between epochs; its codes do.
            "ground_truth": _in_space(_memo(cache, "gt_clusters", lambda: metrics.cluster_count(
                truth[:m], k_max, settings.cluster_criterion, truth_labels[:m], seed)), "data"),
        }
        timings["clusters"] = time.perf_counter() - t0
    out["timings_s"] = timings
    return Evaluation(out, samples, truth, truth_labels)


def evaluate_model(model: VAE, gmm: GMM, x_test: np.ndarray, settings: EvalSettings,
                   seed: int = 0, cache: dict[str, Any] | None = None) -> Evaluation:
    """Sample the model, compare with ground truth, and return every metric.

    ``seed`` fixes the model's sampling and the ground-truth draw, so the same checkpoint gives
    the same numbers. The RNG state of the caller is restored afterwards (training continues
    exactly as if no analysis had run). ``cache``, kept by a caller that evaluates the same
    mixture repeatedly (the analysis callback), remembers what depends on the ground truth
    alone: its coverage, distance floor, mode counts and data-space clustering. The
    sample-only instruments are ``evaluate_samples``'; here the model's own are added (latent
    use, the latent codes' cluster counts, held-out NLL).
    """
    was_training = model.training
    model.eval()
    cpu_state = torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        torch.manual_seed(seed)
        t0 = progress.begin("sampling")
        samples = _sample(model, settings.n_samples)
        t_sample = time.perf_counter() - t0
        # Coverage's extra samples, after the ones above in the same torch stream.
        extra = coverage_draws(settings, gmm, draw_work(model)) - settings.n_samples
        extra_samples = _sample(model, extra) if extra else None
        ev = evaluate_samples(samples, gmm, settings, seed, cache, extra_samples)
        del extra_samples
        out, timings = ev.metrics, {"sample": t_sample, **ev.metrics.pop("timings_s")}
        truth, truth_labels = ev.truth, ev.truth_labels
        usable = samples[np.isfinite(samples).all(axis=1)]
        m = settings.cluster_points

        usage = model.latent_usage(torch.from_numpy(np.asarray(x_test)))
        out["latent"] = metrics.latent_diagnostics(**usage)

        if settings.clusters:
            t0 = progress.begin("clusters (latent codes)")
            vae_codes = model.embed(torch.from_numpy(usable[:m])).cpu().numpy()
            gt_codes = model.embed(torch.from_numpy(truth[:m])).cpu().numpy()
            clusters = out["clusters"]
            vae_labels = gmm.mahalanobis_sq(usable[:m]).argmin(axis=1)
            for key, codes, labels in (("vae_samples", vae_codes, vae_labels),
                                       ("ground_truth", gt_codes, truth_labels[:m])):
                clusters[key].update(_in_space(metrics.cluster_count(
                    codes, clusters["k_max"], settings.cluster_criterion, labels, seed), "latent"))
            timings["clusters"] += time.perf_counter() - t0

        if settings.nll:
            t0 = progress.begin("likelihood (IWAE)")
            xt = x_test if settings.nll_points is None else x_test[: settings.nll_points]
            xt = xt[:affordable(len(xt), iwae_work(model),
                                floor=MIN_NLL_POINTS)]
            model_lp = model.log_prob(torch.from_numpy(xt), k=settings.iwae_samples)
            out["nll"] = metrics.heldout_nll(model_lp.double().cpu().numpy(), gmm.log_prob(xt))
            out["nll"]["iwae_samples"] = settings.iwae_samples
            out["nll"]["n_points"] = len(xt)
            timings["nll"] = time.perf_counter() - t0
        out["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
        return Evaluation(out, samples, truth, truth_labels)
    finally:
        torch.random.set_rng_state(cpu_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        model.train(was_training)


def evaluate_density(model: Any, gmm: GMM, x_test: np.ndarray, settings: EvalSettings,
                     seed: int = 0) -> Evaluation:
    """A reference model (``gmm_vae.model.references``) judged as a VAE is: its samples by
    ``evaluate_samples`` (coverage on as many draws as the work budget pays for), then its
    held-out NLL, exact (``model.log_prob``) where the VAE's is an IWAE bound. It has no
    latent space: no latent diagnostics or latent-code clusters (``metrics["skipped"]``)."""
    t0 = progress.begin("sampling")
    samples = model.sample(settings.n_samples, seed)
    t_sample = time.perf_counter() - t0
    # The coverage's extra draws come from their own stream: the first n_samples stay the same.
    n_extra = coverage_draws(settings, gmm, model.draw_work()) - settings.n_samples
    extra = model.sample(n_extra, seed + 1) if n_extra else None
    ev = evaluate_samples(samples, gmm, settings, seed, coverage_extra=extra)
    del extra
    out, timings = ev.metrics, {"sample": t_sample, **ev.metrics.pop("timings_s")}
    if settings.nll:
        t0 = progress.begin("likelihood (exact)")
        xt = x_test if settings.nll_points is None else x_test[: settings.nll_points]
        out["nll"] = metrics.heldout_nll(np.asarray(model.log_prob(xt), dtype=np.float64),
                                         gmm.log_prob(xt))
        out["nll"]["n_points"] = len(xt)
        out["nll"]["exact"] = True
        timings["nll"] = time.perf_counter() - t0
    out["skipped"] = {"latent": "latent diagnostics: a reference model has no latent space",
                      "clusters.k_latent": "cluster counts of latent codes: no latent space"}
    out["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    return ev
