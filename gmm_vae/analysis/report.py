"""The final evaluation of a run: metrics, samples, figures and a readable report in evaluation/.

``write_evaluation`` is called at the end of training (``analysis.evaluate_at_end``) and by
``evaluate.py`` through ``gmm_vae.runs.rerun.evaluate_run``, which rebuilds a trained model from a
run directory alone; both hand over the plain VAE (``gmm_vae.model.vae``). This module renders and
writes; it never imports the training pipeline or the command-line layer (they import it).
Every file is written atomically, so a killed evaluation never leaves a file that looks
complete but is not.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig

from gmm_vae.analysis import progress
from gmm_vae.analysis.registry import BY_NAME, REPORT, STUDY, Metric, shown
from gmm_vae.config import is_reference
from gmm_vae.errors import ConfigError
from gmm_vae.io import atomic_save_npy, atomic_write_json, atomic_write_text
from gmm_vae.values import fmt, lookup, md_cell

if TYPE_CHECKING:

    from gmm_vae.data.gmm import GMM
    from gmm_vae.model.references import Reference
    from gmm_vae.model.vae import VAE

# torch, Lightning, SciPy and the plotting stack are imported where they are used: together they
# take seconds to import, and ``evaluate.py`` should reject a mistyped run_dir instantly.

EVAL_DIR = "evaluation"
FIGURES = {
    "tsne_latent": "tsne_latent.png",
    "tsne_samples": "tsne_samples.png",
    "pairwise": "pairwise.png",
    "histograms": "histograms.png",
}


# ------------------------------------------------------------------------------ helpers


def json_safe(obj: Any) -> Any:
    """``obj`` with NumPy types made plain and every non-finite number made ``None``.

    JSON has no NaN; a NaN written by ``json.dumps`` would make the file unreadable to strict
    parsers, so it becomes null (as ``metrics.finite_or_none`` does).
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        value = float(obj)
        return value if math.isfinite(value) else None
    if callable(getattr(obj, "numel", None)) and obj.numel() == 1:  # a one-element tensor
        return json_safe(obj.item())
    return obj


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run the native thread pools (OpenMP: KMeans; BLAS: the mixture fits' solves, the SVD,
    the Mahalanobis products) on one thread inside the block.

    The analysis works on a few thousand points, or on products of (D, D) factors, where
    threads buy nothing; but on a busy machine the workers spin-wait for cores: KMeans over
    k = 2..10 took 30 s instead of 2 s, and with BLAS on two threads a 20-D mixture fit took
    9.7 s instead of 0.6 s and a 2,000 x 200 SVD 7.7 s instead of 0.2 s (load 14 on 2 cores).
    The previous limits are restored on exit.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"), \
            threadpool_limits(limits=1, user_api="blas"):
        yield


def run_title(cfg: DictConfig, ckpt_label: str | None = None) -> str:
    """One line of the run's key settings, for figure titles and the report's header."""
    d, m = cfg.data, cfg.model
    mixture = (f"spec {Path(str(d.spec_path)).name}" if d.spec_path
               else f"D={d.dim}, K={d.n_components}, data.seed={d.seed}")
    if is_reference(cfg):
        what = (f"GaussianMixture(K={m.reference_components or 'true'}, "
                f"{m.reference_inits} inits)" if m.family == "gaussian_mixture" else
                f"spline flow ({m.flow_transforms} transforms x {m.flow_hidden})")
        parts = [str(cfg.get("name", "run")), mixture, f"reference {what}"]
        return ", ".join([*parts, f"ckpt {ckpt_label}"] if ckpt_label else parts)
    latent = "auto" if m.latent_dim is None else m.latent_dim
    head = f"{m.likelihood} head"
    if m.likelihood == "gaussian":
        head += f" ({m.get('decoder_covariance', 'diag')} covariance)"
    parts = [str(cfg.get("name", "run")), mixture, f"latent {latent}",
             head, f"{m.prior} prior", f"beta={m.beta:g}"]
    if ckpt_label:
        parts.append(f"ckpt {ckpt_label}")
    return ", ".join(parts)


# ----------------------------------------------------------------------- the evaluation


def write_evaluation(run_dir: str | Path, model: VAE, datamodule: Any, cfg: DictConfig,
                     ckpt_label: str, n_samples: int, seed: int = 0) -> dict[str, Any]:
    """Evaluate ``model`` against ``datamodule.gmm`` and write ``<run_dir>/evaluation/``.

    Files: ``metrics.json`` (every metric, NaN as null, plus ``checkpoint`` and ``seed``),
    ``samples.npy`` (the ``n_samples`` x D VAE samples in data coordinates, float64), four PNG
    figures and ``report.md``. The histogram figure is drawn on the same subset the mode counts
    use, so its peaks are the report's numbers. Returns the metrics as written. A step that
    takes more than a few seconds says so on stderr (``gmm_vae.analysis.progress``).
    """
    with progress.reporting():
        return _write_evaluation(Path(run_dir), model, datamodule, cfg, ckpt_label, n_samples,
                                 seed)


def _write_evaluation(run_dir: Path, model: VAE | Reference, datamodule: Any, cfg: DictConfig,
                      ckpt_label: str, n_samples: int, seed: int) -> dict[str, Any]:
    import torch

    from gmm_vae.analysis import plots
    from gmm_vae.analysis.evaluation import evaluate_density, evaluate_model, settings_from_cfg

    out_dir = Path(run_dir) / EVAL_DIR
    settings = settings_from_cfg(cfg.analysis, int(n_samples))
    gmm: GMM = datamodule.gmm
    reference = is_reference(cfg)
    with single_threaded():
        ev = (evaluate_density(model, gmm, datamodule.x_test, settings, seed=seed) if reference
              else evaluate_model(model, gmm, datamodule.x_test, settings, seed=seed))
    metrics = json_safe({"checkpoint": str(ckpt_label), "seed": int(seed), **ev.metrics})
    atomic_save_npy(out_dir / "samples.npy", np.asarray(ev.samples, dtype=np.float64))
    atomic_write_json(out_dir / "metrics.json", metrics)

    title = run_title(cfg, ckpt_label)
    tsne_points = int(cfg.analysis.tsne_points)
    figures = {}
    if not reference:  # a reference has no latent codes to map
        idx = np.arange(min(tsne_points, len(datamodule.x_test)))
        codes = model.embed(torch.from_numpy(np.asarray(datamodule.x_test[idx]))).cpu().numpy()
        progress.begin("figures (t-SNE)")
        figures["tsne_latent"] = plots.tsne_latent(codes, datamodule.y_test[idx],
                                                   tsne_points=tsne_points, seed=seed,
                                                   title=title)
    figures.update(sample_figures(ev, gmm, settings, tsne_points, seed, title))
    for key, fig in figures.items():
        plots.save_figure(fig, out_dir / FIGURES[key])
    atomic_write_text(out_dir / "report.md", render_report(metrics, cfg, Path(run_dir),
                                                           gmm.weights.tolist()))
    return metrics


# --------------------------------------------------------------------------- the report

def _value(metric: Metric, metrics: dict[str, Any]) -> str:
    """A metric's value as the report shows it: ``3 / 4`` where it has a denominator."""
    text = fmt(metric.read(metrics), metric.digits)
    if metric.out_of:
        total = BY_NAME[metric.out_of]
        text += f" / {fmt(total.read(metrics), total.digits)}"
    return text


def _reference(metric: Metric, metrics: dict[str, Any]) -> str:
    """What to read a value against: its ideal and the values it is read beside
    (``0 (perfect sampler 0.0014)``, ``perfect 0.500 (truth 0.497)``)."""
    refs = [f"{r.label} {_value(r, metrics)}" for r in (BY_NAME[n] for n in metric.beside)]
    if metric.ideal:
        return metric.ideal + (f" ({', '.join(refs)})" if refs else "")
    return refs[0] + "".join(f" ({r})" for r in refs[1:]) if refs else ""


def _study_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(instrument, VAE value, ground-truth value): the registry's STUDY rows."""
    return [(m.label, _value(m, metrics), _value(BY_NAME[m.beside[0]], metrics))
            for m in shown(STUDY)]


def _trusted_rows(metrics: dict[str, Any],
                  latent: bool = True) -> list[tuple[str, str, str, str]]:
    """(measure, value, reference, definition with range and better direction): the
    registry's REPORT rows (without the latent ones for a model that has none)."""
    return [(m.label, _value(m, metrics), _reference(m, metrics), m.sentence)
            for m in shown(REPORT) if latent or not m.key.startswith("latent")]


def _collapse_banner(metrics: dict[str, Any]) -> list[str]:
    """A warning paragraph when the posterior collapsed: every other number reads differently."""
    if not lookup(metrics, "latent.collapsed"):
        return []
    return [f"> **Warning: {lookup(metrics, 'latent.verdict')}.** The model cannot represent "
            "separate modes: its samples are one blob over the data.", ""]


def render_report(metrics: dict[str, Any], cfg: DictConfig, run_dir: Path,
                  weights: list[float] | None = None) -> str:
    """``report.md``: the study's table beside the trusted measures, then the figures.

    ``weights``: the true mixture's, for the component table; None reads them from the run's
    ``gmm.yaml`` (parsing a 200-D mixture's covariances for them cost ~10 s)."""
    g = lambda path: lookup(metrics, path)  # noqa: E731
    a = cfg.analysis
    n = g("n_samples")
    criterion = g("clusters.criterion") or a.cluster_criterion
    reference = is_reference(cfg)
    who = "model" if reference else "VAE"
    lines = [
        f"# Evaluation: {cfg.get('name', 'run')}",
        "",
        f"{run_title(cfg)}.",
        "",
        f"Run `{run_dir}`, checkpoint `{metrics.get('checkpoint')}`, seed {metrics.get('seed')}: "
        f"{fmt(n)} {who} samples against {fmt(n)} fresh samples of the true mixture "
        f"([`gmm.yaml`](../gmm.yaml)). Links are relative to this report.",
        "",
        *_collapse_banner(metrics),
        "## The study's instruments",
        "",
        f"Computed as the study did, on the first {fmt(min(int(a.n_samples), int(n or 0)))} "
        f"samples of each set: the cluster count k by {criterion} (k up to "
        f"{fmt(g('clusters.k_max'))}), and peaks of a "
        f"{a.hist_bins}-bin density histogram. They undercount modes that overlap in a "
        "projection, so read them beside the ground-truth column, not as absolute counts.",
        "",
        f"| instrument | {who} samples | ground truth |",
        "|---|---|---|",
    ]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in _study_rows(metrics)]
    lines += [
        "",
        "## Trusted measures",
        "",
        "| measure | value | reference | definition (range; better) |",
        "|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |"
              for row in _trusted_rows(metrics, latent=not reference)]
    if reference:
        lines += ["", "A reference model has no latent space: no latent diagnostics, latent-code "
                  "cluster counts or latent t-SNE; its NLL is exact (the VAE's is an IWAE bound)."]
    shares, captured = g("coverage.shares"), g("coverage.captured")
    weights = _true_weights(run_dir) if weights is None else weights
    if shares:
        ref, ratio = g("coverage.reference_shares") or [], g("coverage.capture_ratio") or []
        lines += ["", f"Per component: true weight, its share of all {who} samples (high quality, "
                  "near it), a perfect sampler's share, their ratio, captured.", "",
                  f"| component | true weight | {who} share | perfect share | ratio | captured |",
                  "|---|---|---|---|---|---|"]
        for i, share in enumerate(shares):
            w = weights[i] if weights is not None and i < len(weights) else None
            cap = captured[i] if captured and i < len(captured) else None
            r = ref[i] if i < len(ref) else None
            q = ratio[i] if i < len(ratio) else None
            lines.append(f"| {i} | {fmt(w)} | {fmt(share, 4)} | {fmt(r, 4)} | {fmt(q)} | "
                         f"{'yes' if cap else 'no' if cap is not None else 'n/a'} |")
        lines.append(f"| off-mode | | {fmt(g('coverage.off_mode_share'), 4)} | "
                     f"{fmt(1 - sum(ref), 4) if ref else 'n/a'} | | |")
    lines += [
        "",
        "## Figures",
        "",
        f"Ground truth is blue, {who} samples orange, true component means black crosses.",
        "",
        *([] if reference else [
            "- [`tsne_latent.png`](tsne_latent.png): latent codes of test points coloured by "
            "their true component, raw and t-SNE; separate colours mean the encoder separates "
            "the modes."]),
        f"- [`tsne_samples.png`](tsne_samples.png): one t-SNE map of {who} and truth samples; a "
        "blue cluster with no orange is a missed mode.",
        "- [`pairwise.png`](pairwise.png): 2-D projections on every pair of axes, in data units.",
        "- [`histograms.png`](histograms.png): the histograms the mode counts above come from, "
        "with the counted peaks marked.",
        "",
    ]
    for key, name in FIGURES.items():
        if not (reference and key == "tsne_latent"):
            lines += [f"![{key}]({name})", ""]
    timings = g("timings_s")
    if timings:
        lines += ["Timings (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()) + ".", ""]
    return "\n".join(lines)


def _true_weights(run_dir: Path) -> list[float] | None:
    from gmm_vae.data.gmm import GMM

    path = run_dir / "gmm.yaml"
    try:
        return GMM.from_yaml(path).weights.tolist() if path.is_file() else None
    except ConfigError:
        return None


def registry_text(metrics: dict[str, Any], name: str) -> str:
    """A metric's value read and rounded as the registry defines it (``n/a`` when absent)."""
    metric = BY_NAME[name]
    return fmt(metric.read(metrics), metric.digits)


def sizes_text(metrics: dict[str, Any]) -> str:
    """``10,000 samples, coverage on 1,000,000, seed 42``: what an evaluation was computed on."""
    return (f"{fmt(lookup(metrics, 'n_samples'))} samples, coverage on "
            f"{fmt(lookup(metrics, 'coverage.n_samples'))}, seed {fmt(metrics.get('seed'))}")


def coverage_line(metrics: dict[str, Any]) -> str:
    """The console line of the coverage instruments (the end-of-run and the judge's summary)."""
    v = lambda name: registry_text(metrics, name)  # noqa: E731
    return (f"  modes captured {v('modes_captured')}/{v('n_components')}   weight error "
            f"{v('weights_tv')}   HQ share {v('hq_fraction')} (perfect {v('hq_perfect')})")


def c2st_lines(metrics: dict[str, Any]) -> list[str]:
    """C2ST's console line beside its floor, or none when the instrument was off."""
    if not metrics.get("c2st"):
        return []
    return [f"  C2ST accuracy {registry_text(metrics, 'c2st')} (floor "
            f"{registry_text(metrics, 'c2st_floor')}; 0.5 = indistinguishable from the truth)"]


def format_summary(metrics: dict[str, Any]) -> str:
    """The few lines printed when an evaluation ends: coverage, NLL, latent use, the study's k.

    Each value is read and rounded as the registry defines it; the words are short labels of
    a console line (the registry's full labels head the report's tables).
    """
    g = lambda path: lookup(metrics, path)  # noqa: E731
    v = lambda name: registry_text(metrics, name)  # noqa: E731

    lines = [
        f"Evaluation (checkpoint {metrics.get('checkpoint', 'n/a')}, {sizes_text(metrics)}):",
        coverage_line(metrics),
        f"  NLL gap {v('nll_gap')} nats/point (model {v('nll_model')}, true {v('nll_true')})"
        f"   sliced W {v('sliced_wasserstein')} (floor {v('sliced_wasserstein_floor')})",
        *c2st_lines(metrics),
    ]
    clusters = f"  clusters ({g('clusters.criterion') or 'n/a'}, k <= {fmt(g('clusters.k_max'))})"
    if g("latent") is None and g("skipped.latent"):  # a reference model: no latent space
        lines += ["  latent: none (a reference model)",
                  f"{clusters}: samples {v('k_data_vae')}, ground truth {v('k_data_truth')}"]
    else:
        lines += [f"  latent: {g('latent.verdict') or 'n/a'}",
                  f"{clusters}, points/latent: VAE samples {v('k_data_vae')}/"
                  f"{v('k_latent_vae')}, ground truth {v('k_data_truth')}/"
                  f"{v('k_latent_truth')}"]
    if g("latent.collapsed"):
        lines.insert(1, "  WARNING: POSTERIOR COLLAPSE: the model ignores its latent code and "
                        "is one blob over the data.")
    return "\n".join(lines)


def sample_figures(ev: Any, gmm: Any, settings: Any, tsne_points: int, seed: int,
                   title: str) -> dict[str, Any]:
    """The figures that need only samples (t-SNE of samples vs truth, pairwise projections,
    histograms with peaks): one code path for a run's evaluation and for a judged sampler."""
    from gmm_vae.analysis import plots

    m = settings.cluster_points
    return {
        "tsne_samples": plots.tsne_samples_vs_truth(ev.samples, ev.truth,
                                                    tsne_points=tsne_points, seed=seed,
                                                    title=title),
        "pairwise": plots.pairwise_projections(ev.samples, ev.truth, gmm.means, seed=seed,
                                               title=title),
        "histograms": plots.histograms_with_peaks(ev.samples[:m], ev.truth[:m],
                                                  settings.hist_bins, settings.peak_height,
                                                  settings.peak_distance, title=title),
    }
