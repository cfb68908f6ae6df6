"""Figures for looking at a VAE against the true mixture: t-SNE maps, projections, histograms.

Every builder returns a ``matplotlib.figure.Figure`` made without pyplot, so drawing never needs
a screen, never switches the process's backend and never leaves figures in pyplot's registry;
PNGs are rendered by Agg. Colours are fixed across figures: ground truth blue, VAE orange, true
component means black crosses. ``save_figure`` writes a PNG atomically and releases the figure.
"""

from __future__ import annotations

import io
import logging
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from gmm_vae.analysis.metrics import histogram_modes
from gmm_vae.io import atomic_write_bytes

TRUTH_COLOR = "tab:blue"
VAE_COLOR = "tab:orange"
MEAN_COLOR = "black"
BACKGROUND_COLOR = "0.85"
# At most this many dimensions are drawn: 5 axes already make 10 pairwise panels.
MAX_DIMS = 5
# Components get tab10 colours; beyond this many a legend is unreadable and is left out.
_MAX_LEGEND_COMPONENTS = 10
_PANEL_SIZE = (4.0, 3.6)


# ------------------------------------------------------------------------------ helpers


def _subsample(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``size`` of ``n`` points, the same for the same seed."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


def tsne_embedding(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, 2) openTSNE embedding with settings fast enough for a callback (seconds at N=1000).

    Half the default iterations (125 exaggerated + 250 normal) are plenty to show cluster
    structure. A 1-D input is padded with a zero column (distances are unchanged) because
    openTSNE's PCA initialisation needs two input dimensions; perplexity is capped below N/3.
    """
    from openTSNE import TSNE

    # openTSNE logs its choices at INFO even with verbose=False; that is noise in a run's log.
    logging.getLogger("openTSNE").setLevel(logging.WARNING)
    x = _as_2d(x)
    if x.shape[1] == 1:
        x = np.hstack([x, np.zeros_like(x)])
    n = len(x)
    if n < 4:
        # t-SNE needs neighbours; with a handful of points just show them.
        return x[:, :2].copy()
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3.0 - 1.0)))
    tsne = TSNE(perplexity=perplexity, n_iter=250, early_exaggeration_iter=125, n_jobs=1,
                random_state=seed, verbose=False)
    return np.asarray(tsne.fit(x), dtype=np.float64)


def _component_colors(k: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"] if k <= 10 else colormaps["tab20"]
    return [cmap(i % cmap.N) for i in range(k)]


def _scatter_by_label(ax: Axes, xy: np.ndarray, labels: np.ndarray) -> None:
    labels = np.asarray(labels, dtype=int)
    k = int(labels.max()) + 1 if len(labels) else 0
    colors = _component_colors(k)
    for c in range(k):
        mask = labels == c
        if mask.any():
            ax.scatter(xy[mask, 0], xy[mask, 1], s=4, alpha=0.7, color=colors[c],
                       label=f"component {c}", rasterized=True)
    if 0 < k <= _MAX_LEGEND_COMPONENTS:
        _legend(ax)


def _legend(ax: Axes, **kwargs: object) -> None:
    """A legend whose scatter markers are readable whatever the point size in the plot."""
    legend = ax.legend(loc="best", fontsize="x-small", **kwargs)  # type: ignore[arg-type]
    for handle in legend.legend_handles:
        if hasattr(handle, "set_sizes"):
            handle.set_sizes([20.0])
            handle.set_alpha(1.0)


def _limits(*clouds: np.ndarray) -> tuple[float, float]:
    """Axis limits holding the bulk (0.5-99.5 percentiles) of every cloud, with a margin.

    Percentiles rather than min/max so a handful of wild VAE samples cannot squash the view.
    """
    values = [np.nanpercentile(c, [0.5, 99.5]) for c in clouds if np.isfinite(c).any()]
    if not values:
        return -1.0, 1.0
    lo = min(v[0] for v in values)
    hi = max(v[1] for v in values)
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    return float(lo - pad), float(hi + pad)


def _grid(n_panels: int, max_cols: int) -> tuple[int, int]:
    cols = max(1, min(n_panels, max_cols))
    return -(-n_panels // cols), cols


# ------------------------------------------------------------------------------- t-SNE


def tsne_latent(codes: np.ndarray, labels: np.ndarray, *, tsne_points: int = 1000,
                seed: int = 0, title: str | None = None) -> Figure:
    """Latent codes of test points coloured by their true component: raw and t-SNE.

    Left: the codes themselves (dims 1-2; a per-component histogram for a 1-D latent), because
    a 2-D latent needs no t-SNE to be seen and t-SNE distorts distances. Right: the t-SNE map
    the study used. Separate colour blobs mean the encoder separates the components.
    """
    codes = _as_2d(codes)
    labels = np.asarray(labels, dtype=int)
    idx = _subsample(len(codes), tsne_points, seed)
    codes, labels = codes[idx], labels[idx]
    latent_dim = codes.shape[1]

    fig = Figure(figsize=(2 * _PANEL_SIZE[0], _PANEL_SIZE[1]), layout="constrained")
    raw, emb = fig.subplots(1, 2)
    if latent_dim == 1:
        k = int(labels.max()) + 1 if len(labels) else 0
        colors = _component_colors(k)
        bins = np.histogram_bin_edges(codes[:, 0], bins=40)
        for c in range(k):
            if (labels == c).any():
                raw.hist(codes[labels == c, 0], bins=bins, histtype="step", color=colors[c],
                         label=f"component {c}")
        raw.set_xlabel("z")
        raw.set_ylabel("count")
        raw.set_title("latent codes (1-D)")
        if 0 < k <= _MAX_LEGEND_COMPONENTS:
            raw.legend(fontsize="x-small")
    else:
        _scatter_by_label(raw, codes[:, :2], labels)
        raw.set_xlabel("z1")
        raw.set_ylabel("z2")
        raw.set_title("latent codes" if latent_dim == 2
                      else f"latent codes, dims 1-2 of {latent_dim}")
    _scatter_by_label(emb, tsne_embedding(codes, seed), labels)
    if emb.get_legend() is not None:
        emb.get_legend().remove()
    emb.set_xlabel("t-SNE 1")
    emb.set_ylabel("t-SNE 2")
    emb.set_title(f"t-SNE of latent codes ({len(codes)} test points)")
    if title:
        fig.suptitle(title)
    return fig


def tsne_samples_vs_truth(samples: np.ndarray, truth: np.ndarray, *, tsne_points: int = 1000,
                          seed: int = 0, title: str | None = None) -> Figure:
    """One joint t-SNE map of VAE samples and ground-truth samples, shown side by side.

    Both sets share one embedding (``tsne_points`` in all, half from each), so positions are
    comparable: a truth cluster with no orange points in the right panel is a missed mode;
    orange points between clusters are samples in the gaps.
    """
    samples, truth = _as_2d(samples), _as_2d(truth)
    samples = samples[np.isfinite(samples).all(axis=1)]
    half = max(1, tsne_points // 2)
    s = samples[_subsample(len(samples), half, seed)]
    t = truth[_subsample(len(truth), half, seed + 1)]
    emb = tsne_embedding(np.vstack([t, s]), seed)
    et, es = emb[: len(t)], emb[len(t):]

    fig = Figure(figsize=(2 * _PANEL_SIZE[0], _PANEL_SIZE[1]), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    for ax, (main, other, color, name) in zip(
            axes, ((et, es, TRUTH_COLOR, "ground truth"), (es, et, VAE_COLOR, "VAE samples")),
            strict=True):
        ax.scatter(other[:, 0], other[:, 1], s=3, color=BACKGROUND_COLOR, rasterized=True)
        ax.scatter(main[:, 0], main[:, 1], s=4, alpha=0.7, color=color, rasterized=True,
                   label=f"{name} ({len(main)})")
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.set_title(f"{name} (grey: the other set)")
        _legend(ax)
    if title:
        fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------- projections


def pairwise_projections(samples: np.ndarray, truth: np.ndarray,
                         means: np.ndarray | None = None, *, max_points: int = 2000,
                         max_dims: int = MAX_DIMS, seed: int = 0,
                         title: str | None = None) -> Figure:
    """2-D scatter of VAE samples over ground truth for every pair of the first ``max_dims`` axes.

    True component means are black crosses. Projections can hide a mode behind another, but
    unlike t-SNE they do not distort: distances and spreads read in data units. A 1-D mixture
    gets one panel of histograms with the means as vertical lines.
    """
    samples, truth = _as_2d(samples), _as_2d(truth)
    samples = samples[np.isfinite(samples).all(axis=1)]
    s = samples[_subsample(len(samples), max_points, seed)]
    t = truth[_subsample(len(truth), max_points, seed + 1)]
    means = None if means is None else _as_2d(means)
    dim = min(truth.shape[1], max_dims)

    if dim == 1:
        fig = Figure(figsize=_PANEL_SIZE, layout="constrained")
        ax = fig.subplots()
        bins = np.histogram_bin_edges(np.concatenate([t[:, 0], s[:, 0]]), bins=50,
                                      range=_limits(t[:, 0], s[:, 0]))
        ax.hist(t[:, 0], bins=bins, density=True, histtype="step", color=TRUTH_COLOR,
                label="ground truth")
        ax.hist(s[:, 0], bins=bins, density=True, histtype="step", color=VAE_COLOR,
                label="VAE samples")
        if means is not None:
            for i, m in enumerate(means[:, 0]):
                ax.axvline(m, color=MEAN_COLOR, lw=0.8, ls="--",
                           label="true means" if i == 0 else None)
        ax.set_xlabel("x1")
        ax.set_ylabel("density")
        ax.legend(fontsize="x-small")
    else:
        pairs = list(combinations(range(dim), 2))
        rows, cols = _grid(len(pairs), 3 if len(pairs) <= 6 else 4)
        # One panel (2-D data) gets room for the title and the legend.
        scale = 1.4 if len(pairs) == 1 else 1.0
        fig = Figure(figsize=(cols * _PANEL_SIZE[0] * scale, rows * _PANEL_SIZE[1] * scale),
                     layout="constrained")
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        for ax, (i, j) in zip(axes, pairs, strict=False):
            ax.scatter(t[:, i], t[:, j], s=3, alpha=0.35, color=TRUTH_COLOR,
                       label="ground truth", rasterized=True)
            ax.scatter(s[:, i], s[:, j], s=3, alpha=0.35, color=VAE_COLOR,
                       label="VAE samples", rasterized=True)
            if means is not None:
                ax.scatter(means[:, i], means[:, j], marker="x", s=60, linewidths=2,
                           color=MEAN_COLOR, label="true means", zorder=3)
            ax.set_xlim(*_limits(t[:, i], s[:, i]))
            ax.set_ylim(*_limits(t[:, j], s[:, j]))
            ax.set_xlabel(f"x{i + 1}")
            ax.set_ylabel(f"x{j + 1}")
        for ax in axes[len(pairs):]:
            ax.set_visible(False)
        _legend(axes[0])
    shown = f"first {dim} of {truth.shape[1]} axes" if truth.shape[1] > dim else "all axes"
    _suptitle(fig, (f"{title}\n" if title else "") + f"pairwise projections ({shown}; "
              f"{len(s)} VAE vs {len(t)} truth points)")
    return fig


def _suptitle(fig: Figure, text: str) -> None:
    """A figure title wrapped to the figure's width (a one-panel figure of a 2-D mixture would
    otherwise cut the run's settings off at both sides)."""
    import textwrap

    width = max(30, int(fig.get_figwidth() * 11))
    lines = [textwrap.fill(line, width) for line in text.splitlines()]
    fig.suptitle("\n".join(lines), fontsize="medium")


# ---------------------------------------------------------------------------- histograms


def _plot_histogram(ax: Axes, values: np.ndarray, bins: int, height: float, distance: int,
                    color: str, name: str) -> int:
    """Draw one density histogram with the peaks ``histogram_modes`` finds; return the count."""
    modes = histogram_modes(values, bins, height, distance)
    ax.stairs(modes.density, modes.edges, color=color,
              label=f"{name}: {modes.count} peak{'s' if modes.count != 1 else ''}")
    if modes.count:
        idx = np.clip(np.searchsorted(modes.edges, modes.peaks) - 1, 0, len(modes.density) - 1)
        ax.plot(modes.peaks, modes.density[idx], "v", color=color, markersize=8,
                markeredgecolor="black", markeredgewidth=0.5)
    return modes.count


def histograms_with_peaks(samples: np.ndarray, truth: np.ndarray, bins: int = 50,
                          height: float = 0.1, distance: int = 3, *,
                          max_dims: int = MAX_DIMS, title: str | None = None) -> Figure:
    """The study's mode instrument made visible: density histograms and the peaks it counts.

    First panel: all coordinates pooled (the study's "flattened" count); then one panel per axis
    (the first ``max_dims``). Triangles mark what ``metrics.histogram_modes`` counts as peaks
    with the same ``bins``, ``height`` (fraction of the tallest bin) and ``distance`` (bins), so
    the figure shows exactly the numbers in the report.
    """
    samples, truth = _as_2d(samples), _as_2d(truth)
    samples = samples[np.isfinite(samples).all(axis=1)]
    dim = min(truth.shape[1], max_dims)
    panels: list[tuple[str, np.ndarray, np.ndarray]] = [
        ("all coordinates pooled", truth.ravel(), samples.ravel())]
    if truth.shape[1] > 1:
        panels += [(f"axis x{j + 1}", truth[:, j], samples[:, j]) for j in range(dim)]
    rows, cols = _grid(len(panels), 4)
    fig = Figure(figsize=(cols * _PANEL_SIZE[0], rows * _PANEL_SIZE[1]), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (name, t, s) in zip(axes, panels, strict=False):
        _plot_histogram(ax, t, bins, height, distance, TRUTH_COLOR, "truth")
        if len(s):
            _plot_histogram(ax, s, bins, height, distance, VAE_COLOR, "VAE")
        ax.set_title(name)
        ax.set_xlabel("value")
        ax.set_ylabel("density")
        ax.legend(loc="best", fontsize="x-small")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle((f"{title}\n" if title else "") + f"histogram modes ({bins} bins, peaks "
                 f"at least {height:g} of the tallest bin and {distance} bins apart)")
    return fig


# --------------------------------------------------------------------------------- output


def figure_png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure rendered as PNG (Agg), in memory."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG atomically (temporary file beside it, then rename) and release it.

    Atomic so a run killed mid-write never leaves a truncated PNG that looks complete.
    """
    path = Path(path)
    try:
        atomic_write_bytes(path, figure_png_bytes(fig, dpi))
    finally:
        close_figure(fig)
    return path


def close_figure(fig: Figure) -> None:
    """Release a figure; unregister it from pyplot too if something (TensorBoard) put it there."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
    fig.clear()

