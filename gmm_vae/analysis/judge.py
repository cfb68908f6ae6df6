"""Judge samples from anywhere against a mixture: every instrument that needs only samples.

A GAN, a diffusion model, a flow or another VAE library leaves an (N, D) array; this module
scores it with exactly the code that scores the VAE (``evaluation.evaluate_samples``:
coverage, weight error, the literature protocol, C2ST, sliced Wasserstein, cluster and mode
counts) and writes the same ``evaluation/`` files (``metrics.json``, ``samples.npy``,
``report.md``, the figures that need no model). What needs a model is skipped and said so
(``SKIPPED``): the held-out NLL needs its density, the latent diagnostics and latent-code
clusters its encoder. ``python evaluate.py samples=<file> truth=<gmm.yaml | run dir>`` and
``gmm_vae.judge`` are its two doors; every input mistake is a one-line ``ConfigError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gmm_vae.analysis.c2st import MIN_SAMPLES as C2ST_MIN_SAMPLES
from gmm_vae.analysis.evaluation import EvalSettings, Evaluation, evaluate_samples
from gmm_vae.analysis.registry import BY_NAME, REPORT, STUDY, shown
from gmm_vae.analysis.report import (
    FIGURES,
    _reference,
    _value,
    c2st_lines,
    coverage_line,
    json_safe,
    registry_text,
    sample_figures,
    single_threaded,
    sizes_text,
)
from gmm_vae.config import AnalysisConfig, TrainConfig
from gmm_vae.data.gmm import GMM
from gmm_vae.errors import ConfigError
from gmm_vae.io import atomic_save_npy, atomic_write_json, atomic_write_text
from gmm_vae.values import fmt, md_cell

# What a judgement cannot compute, and why: the metrics.json groups (and figure) left out.
SKIPPED = {
    "nll": "held-out NLL: needs the model's density",
    "latent": "latent diagnostics: need the model's encoder",
    "clusters.k_latent": "cluster counts of latent codes: need the model's encoder",
    "tsne_latent": "t-SNE of latent codes: needs the model's encoder",
}
# The figures a judgement draws (no latent codes).
JUDGE_FIGURES = {k: v for k, v in FIGURES.items() if k != "tsne_latent"}
SAMPLE_SUFFIXES = (".npy", ".csv", ".txt")
DEFAULT_SEED = TrainConfig.seed  # as train.py's: a run's own samples then meet the same truth


def load_samples(path: str | Path, setting: str = "samples") -> np.ndarray:
    """An (N, D) array from a ``.npy`` file, or a ``.csv`` / ``.txt`` of comma- or
    space-separated rows; a one-line ConfigError when it is none."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{setting}={path}: no such file")
    if path.suffix not in SAMPLE_SUFFIXES:
        raise ConfigError(f"{setting}={path}: expected a .npy, .csv or .txt file of (N, D) "
                          "samples")
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            text = path.read_text()
            array = np.loadtxt(path, delimiter="," if "," in text else None, ndmin=1)
    except Exception as exc:  # any unreadable file is the user's to fix
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{setting}={path}: cannot be read as an array ({reason})") from None
    return np.asarray(array)


def load_truth(truth: str | Path | GMM, setting: str = "truth") -> GMM:
    """The mixture to judge against: a GMM, a spec file (``gmm.yaml`` format) or a run
    directory (its ``gmm.yaml``, the mixture it trained on)."""
    if isinstance(truth, GMM):
        return truth
    path = Path(str(truth)).expanduser()
    if path.is_dir():
        if not (path / "gmm.yaml").is_file():
            raise ConfigError(f"{setting}={path}: a directory without gmm.yaml (pass a run "
                              "directory or a mixture spec file)")
        path = path / "gmm.yaml"
    elif not path.is_file():
        raise ConfigError(f"{setting}={path}: no such mixture file or run directory")
    try:
        return GMM.from_yaml(path)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("data.spec_path", setting, 1)) from None


def check_samples(samples: Any, gmm: GMM, c2st: bool = True,
                  setting: str = "samples") -> np.ndarray:
    """``samples`` as a float64 (N, D) array fit to judge against ``gmm``, or ConfigError."""
    try:
        x = np.asarray(samples, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{setting}: not a numeric array") from None
    d = gmm.dim
    if x.ndim != 2:
        hint = (f"; one row per sample, D = {d} columns (x.reshape(-1, {d}) if flattened)"
                if x.ndim == 1 else "")
        raise ConfigError(f"{setting}: expected an (N, D) array, got shape {x.shape}{hint}")
    if x.shape[1] != d:
        raise ConfigError(f"{setting}: {x.shape[1]} columns, but the mixture is {d}-D")
    bad = int((~np.isfinite(x).all(axis=1)).sum())
    if bad:
        raise ConfigError(f"{setting}: {bad} of {len(x)} rows are not finite (NaN or inf); "
                          "drop them first")
    least = C2ST_MIN_SAMPLES if c2st else 10
    if len(x) < least:
        why = " (C2ST needs that many; c2st=false skips it)" if c2st else ""
        raise ConfigError(f"{setting}: {len(x)} rows, at least {least} needed{why}")
    return x


def settings_for(n_rows: int, n_samples: int | None = None, c2st: bool = True) -> EvalSettings:
    """The evaluation's settings for ``n_rows`` samples: the first ``n_samples`` (default:
    ``analysis.eval_samples``, 10,000, or all rows if fewer) behind everything but the
    coverage, which uses every row."""
    if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, int)
                                  or n_samples < 1):
        raise ConfigError(f"n_samples must be a positive integer (got {n_samples!r})")
    n = min(n_rows, n_samples or AnalysisConfig.eval_samples)
    return EvalSettings(n_samples=n, cluster_points=min(AnalysisConfig.n_samples, n),
                        coverage_samples=n_rows, nll=False, c2st=c2st)


def judge_samples(samples: np.ndarray, gmm: GMM, settings: EvalSettings,
                  seed: int = DEFAULT_SEED) -> Evaluation:
    """Every sample-only instrument on checked ``samples``; ``skipped`` names the rest."""
    n = settings.n_samples
    extra = samples[n:] if len(samples) > n else None
    with single_threaded():
        ev = evaluate_samples(samples[:n], gmm, settings, seed, coverage_extra=extra)
    ev.metrics["timings_s"] = {k: round(v, 3) for k, v in ev.metrics["timings_s"].items()}
    ev.metrics["skipped"] = dict(SKIPPED)
    return ev


def write_judgement(out_dir: str | Path, ev: Evaluation, gmm: GMM, source: str, truth: str,
                    seed: int, settings: EvalSettings) -> dict[str, Any]:
    """``out_dir``'s ``metrics.json``, ``samples.npy`` (the ``n_samples`` judged), the
    figures that need no model and ``report.md``; returns the metrics as written."""
    from gmm_vae.analysis import plots

    out = Path(out_dir)
    metrics = json_safe({"checkpoint": None, "source": source, "truth": truth,
                         "seed": int(seed), **ev.metrics})
    atomic_save_npy(out / "samples.npy", np.asarray(ev.samples, dtype=np.float64))
    atomic_write_json(out / "metrics.json", metrics)
    title = f"judged: {Path(source).name} against {Path(truth).name}"
    figures = sample_figures(ev, gmm, settings, AnalysisConfig.tsne_points, seed, title)
    for key, fig in figures.items():
        plots.save_figure(fig, out / JUDGE_FIGURES[key])
    atomic_write_text(out / "report.md", render_judgement(metrics, gmm, title))
    return metrics


def _skipped(key: str) -> bool:
    """Whether a metric key is one a judgement cannot compute (``SKIPPED``)."""
    return key.split(".")[0] in ("nll", "latent") or key.endswith("_latent")


def render_judgement(metrics: dict[str, Any], gmm: GMM, title: str) -> str:
    """``report.md`` of a judgement: the registry's rows that need no model, then the
    per-component table and the figures."""
    n = metrics.get("n_samples")
    lines = [f"# Evaluation: {title}", "",
             f"`{metrics.get('source')}`: {fmt(n)} samples against {fmt(n)} fresh samples of "
             f"the mixture `{metrics.get('truth')}` (seed {metrics.get('seed')}); coverage on "
             f"{fmt(metrics.get('coverage', {}).get('n_samples'))}.", "",
             "Skipped for lack of a model: "
             + "; ".join(SKIPPED.values()) + ".", "",
             "## The study's instruments", "",
             "| instrument | samples | ground truth |", "|---|---|---|"]
    lines += [f"| {md_cell(m.label)} | {_value(m, metrics)} | "
              f"{_value(BY_NAME[m.beside[0]], metrics)} |"
              for m in shown(STUDY) if not _skipped(m.key)]
    lines += ["", "## Trusted measures", "",
              "| measure | value | reference | definition (range; better) |",
              "|---|---|---|---|"]
    lines += [f"| {md_cell(m.label)} | {_value(m, metrics)} | {md_cell(_reference(m, metrics))} "
              f"| {md_cell(m.sentence)} |" for m in shown(REPORT) if not _skipped(m.key)]
    cov = metrics.get("coverage", {})
    shares, ref = cov.get("shares") or [], cov.get("reference_shares") or []
    ratio, captured = cov.get("capture_ratio") or [], cov.get("captured") or []
    lines += ["", "Per component: true weight, its share of all samples (high quality, near "
              "it), a perfect sampler's share, their ratio, captured.", "",
              "| component | true weight | share | perfect share | ratio | captured |",
              "|---|---|---|---|---|---|"]
    for i, share in enumerate(shares):
        cells = [str(i), fmt(float(gmm.weights[i])), fmt(share, 4),
                 fmt(ref[i] if i < len(ref) else None, 4),
                 fmt(ratio[i] if i < len(ratio) else None),
                 "yes" if i < len(captured) and captured[i] else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Figures", "", "Ground truth is blue, samples orange.", ""]
    lines += [f"![{key}]({name})" for key, name in JUDGE_FIGURES.items()]
    return "\n".join(lines) + "\n"


def format_judgement(metrics: dict[str, Any], out_dir: Path | None = None) -> str:
    """The lines ``evaluate.py samples=...`` prints: what was judged, the headline numbers,
    what was skipped, where the files are."""
    v = lambda name: registry_text(metrics, name)  # noqa: E731
    lines = [
        f"Judged {metrics.get('source')} against {metrics.get('truth')} "
        f"({sizes_text(metrics)}):",
        coverage_line(metrics),
        f"  sliced W {v('sliced_wasserstein')} (floor {v('sliced_wasserstein_floor')})",
        *c2st_lines(metrics),
        f"  clusters ({metrics.get('clusters', {}).get('criterion', 'n/a')}): samples "
        f"{v('k_data_vae')}, ground truth {v('k_data_truth')}   N-D modes {v('modes_nd_vae')} "
        f"(truth {v('modes_nd_truth')})",
        "  skipped (no model): " + ", ".join(s.split(":")[0] for s in SKIPPED.values()),
    ]
    if out_dir is not None:
        lines.append(f"  report:  {Path(out_dir) / 'report.md'}")
        lines.append(f"  metrics: {Path(out_dir) / 'metrics.json'}")
    return "\n".join(lines)


def judge(samples: Any, truth: str | Path | GMM, out_dir: str | Path | None = None,
          n_samples: int | None = None, seed: int | None = None, c2st: bool = True,
          source: str | None = None) -> dict[str, Any]:
    """Score ``samples`` (an (N, D) array or the path of one) against ``truth`` (a GMM, a
    spec file or a run directory); write ``out_dir`` when given. Returns the metrics.

    ``seed`` (default 42, train.py's) draws the truth; ``n_samples`` (default 10,000) rows
    are behind everything but the coverage, which uses every row.
    """
    from gmm_vae.config import check_seed

    seed = DEFAULT_SEED if seed is None else seed
    check_seed(seed, "seed")
    gmm = load_truth(truth)
    if isinstance(samples, str | Path):
        source = source or str(samples)
        samples = load_samples(samples)
    x = check_samples(samples, gmm, c2st)
    settings = settings_for(len(x), n_samples, c2st)
    ev = judge_samples(x, gmm, settings, seed)
    truth_label = "mixture (in memory)" if isinstance(truth, GMM) else str(truth)
    source = source or "samples (in memory)"
    if out_dir is not None:
        return write_judgement(out_dir, ev, gmm, source, truth_label, seed, settings)
    return json_safe({"checkpoint": None, "source": source, "truth": truth_label,
                      "seed": int(seed), **ev.metrics})


def default_out_dir(samples_path: str | Path) -> Path:
    """Where ``evaluate.py samples=<file>`` writes without ``out=``: ``<stem>_evaluation/``
    beside the file, so judging a run's own ``evaluation/samples.npy`` never overwrites it."""
    path = Path(samples_path).expanduser()
    return path.with_name(f"{path.stem}_evaluation")
