"""A sweep's figures: ``summary_modes.png`` and ``summary_nll_gap.png``.

Each draws a headline metric against the first varying numeric override, one line per value of
the second; several jobs at one point (e.g. seeds) are faint dots around their mean. matplotlib
is imported only when a figure is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gmm_vae.runs.sweep_jobs import JobRow, override_keys, varying_keys
from gmm_vae.values import finite_number

MODES_FIGURE = "summary_modes.png"
NLL_GAP_FIGURE = "summary_nll_gap.png"

_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def figure_axes(rows: Sequence[JobRow]) -> tuple[str, str | None] | None:
    """(x key, group key or None): the first varying override with numeric values, and the
    first other varying override (one line per value). None when no numeric override varies."""
    varying = varying_keys(rows)
    numeric = [k for k in varying
               if all(finite_number(r.overrides.get(k)) is not None for r in rows)]
    if not numeric:
        return None
    x_key = numeric[0]
    others = [k for k in varying if k != x_key]
    return x_key, (others[0] if others else None)


def plot_metric(rows: Sequence[JobRow], metric: str, x_key: str, group_key: str | None,
                *, ylabel: str, title: str, reference: tuple[float, str] | None,
                subtitle: str = "", counts: bool = False) -> Any:
    """``metric`` against ``x_key``, one line per ``group_key`` value; None when nothing to draw.

    Several jobs at one (x, group) point (e.g. a third override such as the seed) are drawn as
    faint dots with their mean on the line. The ground truth's value, when there is one, is a
    dashed blue line, as in every figure of this project; a single line is the VAE's orange.
    ``counts``: integer y ticks from 0, for counts such as modes captured.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from gmm_vae.analysis.plots import TRUTH_COLOR, VAE_COLOR

    points: dict[str | None, dict[float, list[float]]] = {}
    for r in rows:
        y = finite_number(r.metrics.get(metric))
        x = finite_number(r.overrides.get(x_key))
        if y is None or x is None:
            continue
        group = r.overrides.get(group_key, "") if group_key else None
        points.setdefault(group, {}).setdefault(x, []).append(y)
    if not points:
        return None

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    groups = sorted(points, key=lambda g: (finite_number(g) is None, finite_number(g) or 0.0,
                                           str(g)))
    colours = colormaps["viridis"]
    for i, group in enumerate(groups):
        colour = colours(0.85 * i / max(1, len(groups) - 1)) if group_key else VAE_COLOR
        xs = sorted(points[group])
        means = [sum(points[group][x]) / len(points[group][x]) for x in xs]
        label = f"{group_key}={group}" if group_key else "VAE"
        # Markers shrink from group to group, so lines that coincide stay visible.
        ax.plot(xs, means, marker=_MARKERS[i % len(_MARKERS)], color=colour, label=label,
                markersize=max(4.0, 9.0 - 1.5 * i), linewidth=1.5)
        for x in xs:
            if len(points[group][x]) > 1:
                ax.scatter([x] * len(points[group][x]), points[group][x], color=colour,
                           alpha=0.35, s=14)
    if reference is not None:
        ax.axhline(reference[0], color=TRUTH_COLOR, linestyle="--", label=reference[1])
    all_x = sorted({x for g in points.values() for x in g})
    if all_x[0] > 0 and all_x[-1] / all_x[0] > 20:
        ax.set_xscale("log")
    if len(all_x) <= 10:
        ax.set_xticks(all_x, [f"{x:g}" for x in all_x])
    if counts:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(bottom=-0.2, top=max(ax.get_ylim()[1], 1.0) + 0.2)
    ax.set_xlabel(x_key)
    ax.set_ylabel(ylabel)
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return fig


def write_figures(rows: Sequence[JobRow], sweep_dir: Path) -> dict[str, Path]:
    """``summary_modes.png`` and ``summary_nll_gap.png`` when something varies and has metrics.

    A figure that cannot be drawn now is removed if an earlier summary left one, so the sweep
    dir never shows a figure that disagrees with its table.
    """
    from gmm_vae.analysis.plots import save_figure

    axes = figure_axes(rows)
    varying = varying_keys(rows)
    common = [f"{k}={rows[0].overrides[k]}" for k in override_keys(rows)
              if k not in varying and k in rows[0].overrides]
    subtitle = ", ".join(common)
    written: dict[str, Path] = {}
    ks = {int(k) for r in rows if (k := finite_number(r.metrics.get("n_components"))) is not None}
    k_line = (float(next(iter(ks))), f"truth: all K={next(iter(ks))}") if len(ks) == 1 else None
    specs: list[tuple[str, str, str, str, str, tuple[float, str] | None]] = [
        ("modes_figure", MODES_FIGURE, "modes_captured", "modes captured",
         "modes captured, of K (higher is better)", k_line),
        ("nll_gap_figure", NLL_GAP_FIGURE, "nll_gap", "held-out NLL gap",
         "NLL gap, nats per point (lower is better)", (0.0, "truth: gap 0")),
    ]
    for key, name, metric, title, ylabel, reference in specs:
        path = sweep_dir / name
        fig = None
        if axes is not None:
            x_key, group_key = axes
            fig = plot_metric(rows, metric, x_key, group_key, ylabel=ylabel,
                              title=f"{title} vs {x_key}",
                              reference=reference, subtitle=subtitle,
                              counts=metric == "modes_captured")
        if fig is None:
            path.unlink(missing_ok=True)
            continue
        written[key] = save_figure(fig, path)
    return written
