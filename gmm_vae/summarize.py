"""One table for a whole sweep: ``summary.csv``, ``summary.md`` and two figures in the sweep dir.

A multirun leaves one directory per job (``multirun/<date>/<time>/<job num>/``), each with its
overrides, ``status.json`` and, when it finished, ``evaluation/metrics.json``. Reading twelve of
them by hand is how results get mis-copied, so ``summarize_sweep`` collects them into one row per
job. It is called by the Hydra callback when a multirun ends (``gmm_vae.hydra_callbacks``) and
from the shell for a sweep that was killed, is still running, or ran on a cluster::

    python -m gmm_vae.summarize multirun/2026-11-26/07-41-00

A job dir that is broken (corrupt JSON, missing files, killed mid-run) is still a row, with the
problem in its ``error`` column: a summary that crashes on the one odd job hides all the others.
Every file is written atomically. Only the standard library, PyYAML and (for the figures)
matplotlib are used, so summarising never waits for torch to import.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gmm_vae.aggregate import AGGREGATED, SeedGroup, group_by_seed, has_repeats
from gmm_vae.errors import ConfigError
from gmm_vae.io import atomic_write_text
from gmm_vae.registry import BY_NAME, CSV, HEADLINE, STATUS_FILE, STUDY, Metric, lookup, shown

CSV_NAME = "summary.csv"
SEEDS_CSV_NAME = "summary_seeds.csv"
MARKDOWN_NAME = "summary.md"
MODES_FIGURE = "summary_modes.png"
NLL_GAP_FIGURE = "summary_nll_gap.png"
OPTUNA_RESULTS = "optimization_results.yaml"

COMPLETED, FAILED, UNFINISHED = "completed", "failed", "unfinished"

# CSV column -> path in evaluation/metrics.json, from the registry. Flat names, so a spreadsheet
# or pandas reads them without knowing the nesting; ``_truth`` columns are the ground truth's.
METRIC_PATHS: dict[str, str] = {m.name: m.key for m in shown(CSV)}
# Columns every row has, before the overrides' and after them.
LEAD_COLUMNS = ("job",)
STATUS_COLUMNS = ("status", "error", "wall_time_s", "objective", "val_loss")

# Job dirs are looked for this deep below the sweep dir: Hydra's default subdir is one level,
# a custom ``hydra.sweep.subdir`` (e.g. an override_dirname holding a path) may add a few.
_MAX_DEPTH = 3

_MARKERS = ("o", "s", "^", "D", "v", "P", "X")

# ------------------------------------------------------------------------------ reading


@dataclass
class JobRow:
    """Everything the summary knows about one job; ``None`` means unknown."""

    job: str
    path: Path
    overrides: dict[str, str] = field(default_factory=dict)
    status: str = UNFINISHED
    errors: list[str] = field(default_factory=list)
    wall_time_s: float | None = None
    objective: float | None = None
    val_loss: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> str:
        return "; ".join(self.errors)


def _natural_key(text: str) -> list[tuple[int, int | str]]:
    """Sort ``2`` before ``10``: digit runs compare as numbers, the rest as text."""
    return [(0, int(part)) if part.isdigit() else (1, part)
            for part in re.split(r"(\d+)", text) if part]


def find_job_dirs(sweep_dir: Path) -> list[Path]:
    """Subdirectories holding ``.hydra/overrides.yaml``, in job-number order.

    Hidden directories (``.submitit``, ``.hydra``) and a job dir's own subfolders are not
    searched: only the first level that is a job counts.
    """
    jobs: list[Path] = []

    def walk(directory: Path, depth: int) -> None:
        try:
            children = sorted(p for p in directory.iterdir() if p.is_dir())
        except OSError:
            return
        for child in children:
            if child.name.startswith("."):
                continue
            if (child / ".hydra" / "overrides.yaml").is_file():
                jobs.append(child)
            elif depth < _MAX_DEPTH:
                walk(child, depth + 1)

    walk(Path(sweep_dir), 1)
    return sorted(jobs, key=lambda p: _natural_key(p.relative_to(sweep_dir).as_posix()))


def parse_override(text: str) -> tuple[str, str]:
    """``("model.latent_dim", "2")`` for ``model.latent_dim=2``; prefixes ``+ ++ ~`` dropped."""
    key, sep, value = str(text).partition("=")
    key = key.lstrip("+~").strip()
    if not sep and str(text).startswith("~"):
        value = "(deleted)"
    return key, value.strip()


def _read_json(path: Path) -> tuple[Any, str | None]:
    """(content, None), or (None, why it could not be read)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{path.name}: unreadable ({type(exc).__name__})"


def _number(value: Any) -> float | None:
    """A finite float, or None for anything else (missing, null, NaN, text)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def read_job(job_dir: Path, sweep_dir: Path) -> JobRow:
    """One job dir as a row; every problem found goes into ``errors``, nothing raises."""
    row = JobRow(job=job_dir.relative_to(sweep_dir).as_posix(), path=job_dir)
    try:
        overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text("utf-8"))
        if not isinstance(overrides, list):
            raise ValueError("not a list")
        row.overrides = dict(parse_override(item) for item in overrides)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        row.errors.append(f"overrides.yaml: unreadable ({type(exc).__name__})")

    status, problem = _read_json(job_dir / "status.json")
    if problem:
        row.errors.append(problem)
    elif status is None:
        pass  # killed before train() started, or still starting: unfinished
    elif not isinstance(status, dict):
        row.errors.append("status.json: not a JSON object")
    else:
        state = status.get("status")
        if state == COMPLETED:
            row.status = COMPLETED
        elif state == FAILED:
            row.status = FAILED
            row.errors.insert(0, str(status.get("error") or "failed without a message"))
        elif state != "running":
            row.errors.append(f"status.json: unknown status {state!r}")
        row.wall_time_s = _number(status.get("wall_time_s"))
        row.objective = _number(status.get("objective"))
        final = status.get("final_metrics")
        if isinstance(final, dict):
            row.val_loss = _number(final.get("val/loss"))

    metrics, problem = _read_json(job_dir / "evaluation" / "metrics.json")
    if problem:
        row.errors.append(f"evaluation/{problem}")
    elif isinstance(metrics, dict):
        row.metrics = {name: lookup(metrics, path) for name, path in METRIC_PATHS.items()}
    return row


def read_sweep(sweep_dir: Path) -> list[JobRow]:
    """All job rows of ``sweep_dir``; ConfigError when it is no directory or holds no job."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(f"{sweep_dir}: no such sweep directory")
    job_dirs = find_job_dirs(sweep_dir)
    if not job_dirs:
        raise ConfigError(f"{sweep_dir}: no job directories in it (none holds "
                          ".hydra/overrides.yaml)")
    return [read_job(d, sweep_dir) for d in job_dirs]


def override_keys(rows: Sequence[JobRow]) -> list[str]:
    """Every override key, in the order the jobs first name them (the command line's order)."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row.overrides))
    return list(keys)


def varying_keys(rows: Sequence[JobRow]) -> list[str]:
    """The override keys whose value differs between jobs (a missing value counts as one)."""
    return [key for key in override_keys(rows)
            if len({row.overrides.get(key) for row in rows}) > 1]


# ------------------------------------------------------------------------------ writing


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return value


def render_csv(rows: Sequence[JobRow]) -> str:
    """``summary.csv``: job, one column per override key, status columns, flat metrics."""
    keys = override_keys(rows)
    fixed = set(LEAD_COLUMNS) | set(STATUS_COLUMNS) | set(METRIC_PATHS)
    # An override named like a fixed column (unlikely, but ``status=...`` is legal) is prefixed.
    header_keys = [f"override.{k}" if k in fixed else k for k in keys]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*LEAD_COLUMNS, *header_keys, *STATUS_COLUMNS, *METRIC_PATHS])
    for row in rows:
        writer.writerow([
            row.job,
            *(row.overrides.get(k, "") for k in keys),
            row.status, row.error,
            *(_csv_value(v) for v in (row.wall_time_s, row.objective, row.val_loss)),
            *(_csv_value(row.metrics.get(name)) for name in METRIC_PATHS),
        ])
    return buf.getvalue()


def _fmt(value: Any, digits: int = 3) -> str:
    number = _number(value)
    if number is None:
        return "n/a"
    if isinstance(value, int) or digits == 0:
        return str(round(number))
    return f"{number:.{digits}f}"


def _pair(a: Any, b: Any) -> str:
    return "n/a" if a is None and b is None else f"{_fmt(a, 0)} / {_fmt(b, 0)}"


def _md_override(text: str) -> str:
    """An override value for the table: a float an Optuna trial drew (0.0007536062461086747)
    is shown to 4 significant digits; the CSV keeps it exact."""
    number = _as_number(text)
    if number is None or not any(c in text for c in ".eE") or len(text) <= 8:
        return text
    return f"{number:.4g}"


def _md_escape(text: str) -> str:
    """Text safe inside a markdown table cell (pipes and newlines would break the row)."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(rows: Sequence[JobRow], sweep_dir: Path,
                    figures: Sequence[tuple[str, Path]] = ()) -> str:
    """``summary.md``: a table of the varying overrides and headline metrics, one row per job.

    Settings shared by every job are stated once above the table, so the table holds only what
    differs. A failed or unfinished job keeps its row with the reason in the status cell. The
    best objective is in bold. A legend defines each column (range, better direction).
    """
    varying = varying_keys(rows)
    common = [f"{k}={rows[0].overrides[k]}" for k in override_keys(rows)
              if k not in varying and k in rows[0].overrides]
    counts = {s: sum(r.status == s for r in rows) for s in (COMPLETED, FAILED, UNFINISHED)}
    objectives = [r.objective for r in rows if r.objective is not None]
    best = max(objectives) if objectives else None
    lines = [
        f"# Sweep `{sweep_dir}`",
        "",
        f"{len(rows)} jobs: {counts[COMPLETED]} completed, {counts[FAILED]} failed, "
        f"{counts[UNFINISHED]} unfinished. "
        + (f"Common settings: {', '.join(f'`{c}`' for c in common)}." if common
           else "No common overrides."),
        "",
    ]
    headline = shown(HEADLINE)
    headers = ["job", *varying, "status",
               *(f"{h.label} VAE / truth" if STUDY in h.shown else h.header for h in headline),
               "wall (s)"]
    lines += ["| " + " | ".join(_md_escape(h) for h in headers) + " |",
              "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        status = r.status if not r.error else f"**{r.status}**: {r.error}"
        if r.status == COMPLETED and r.error:
            status = f"{r.status} ({r.error})"
        cells = [r.job, *(_md_override(r.overrides.get(k, "")) for k in varying), status,
                 *(_headline_cell(h, r, best if len(objectives) > 1 else None)
                   for h in headline),
                 _fmt(r.wall_time_s, 1)]
        lines.append("| " + " | ".join(_md_escape(str(c)) for c in cells) + " |")
    lines += render_seed_table(rows)
    lines += ["", "Columns (every metric of every job is in `summary.csv` and in "
              "`<job>/evaluation/metrics.json`):", ""]
    lines += [f"- **{h.label}**: {h.sentence}." for h in headline]
    lines.append("")
    optuna = _optuna_best(sweep_dir)
    if optuna:
        lines += [optuna, ""]
    for title, path in figures:
        lines += [f"![{title}]({path.name})", ""]
    return "\n".join(lines)


# The headline column that marks a model whose posterior collapsed (``latent.collapsed``).
_MARKS_COLLAPSE = "active_units"


def _headline_cell(metric: Metric, row: JobRow, best: float | None) -> str:
    """One headline cell: the value (of K where it has a denominator), a study instrument as
    ``VAE / truth``, the best objective in bold, a collapsed model's latent cell marked."""
    if metric.source == STATUS_FILE:
        value = getattr(row, metric.name)
        text = _fmt(value, metric.digits)
        return f"**{text}**" if best is not None and value == best else text
    m = row.metrics
    value = m.get(metric.name)
    if STUDY in metric.shown:
        return _pair(value, m.get(metric.beside[0]))
    if value is None:
        return "n/a"
    text = _fmt(value, metric.digits)
    if metric.out_of in m:
        text = f"{text}/{_fmt(m[metric.out_of], 0)}"
    if metric.name == _MARKS_COLLAPSE and m.get("posterior_collapsed"):
        text = f"**collapsed** ({text})"
    return text


def seed_groups(rows: Sequence[JobRow]) -> list[SeedGroup]:
    """The sweep's jobs grouped by every override but ``seed`` / ``data.seed``."""
    return group_by_seed([(r.job, r.overrides, r.metrics) for r in rows])


# The seed table's metric columns (each aggregated in ``gmm_vae.aggregate``).
_SEED_COLUMNS = tuple(BY_NAME[name] for name in ("weights_tv", "nll_gap", "hq_ratio"))


def render_seed_table(rows: Sequence[JobRow]) -> list[str]:
    """Markdown lines of the seed-aggregated table; none when no setting ran on several seeds."""
    groups = seed_groups(rows)
    if not has_repeats(groups):
        return []
    lines = ["", "## Seeds aggregated", "",
             "Jobs that differ only in `seed` / `data.seed`, one row per setting: mean ± sd over "
             "the seeds and, in brackets, the worst seed's value.", "",
             "| setting | seeds | modes | "
             + " | ".join(m.header for m in _SEED_COLUMNS) + " | collapsed |",
             "|---|---|---|---|---|---|---|"]
    for g in groups:
        setting = ", ".join(f"`{k}={v}`" for k, v in g.settings.items()) or "(defaults)"
        cells = [setting, str(len(g.jobs)), g.captured_text()]
        cells += [g.stats[m.name].text(m.digits) if m.name in g.stats else "n/a"
                  for m in _SEED_COLUMNS]
        cells.append(f"{g.collapsed} of {g.evaluated}")
        lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    return lines


def render_seed_csv(rows: Sequence[JobRow]) -> str:
    """``summary_seeds.csv``: one row per setting; n, mean, sd, worst of each metric."""
    groups = seed_groups(rows)
    keys = sorted({k for g in groups for k in g.settings})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = [*keys, "n_jobs", "n_evaluated", "all_modes_captured", "collapsed"]
    for metric in AGGREGATED:
        header += [f"{metric}_{s}" for s in ("mean", "sd", "worst")]
    writer.writerow(header)
    for g in groups:
        row: list[Any] = [g.settings.get(k, "") for k in keys]
        row += [len(g.jobs), g.evaluated, g.all_captured, g.collapsed]
        for metric in AGGREGATED:
            st = g.stats.get(metric)
            row += ["", "", ""] if st is None else [st.mean, st.sd, st.worst]
        writer.writerow(row)
    return buf.getvalue()


def _optuna_best(sweep_dir: Path) -> str | None:
    """One line on the Optuna sweeper's best trial, when it left ``optimization_results.yaml``."""
    path = sweep_dir / OPTUNA_RESULTS
    if not path.is_file():
        return None
    try:
        results = yaml.safe_load(path.read_text("utf-8"))
        params = ", ".join(f"`{k}={v}`" for k, v in results["best_params"].items())
        return f"Optuna's best trial: objective {_fmt(results['best_value'])} with {params}."
    except (OSError, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return f"`{OPTUNA_RESULTS}` is present but unreadable."


# ------------------------------------------------------------------------------ figures


def _as_number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def figure_axes(rows: Sequence[JobRow]) -> tuple[str, str | None] | None:
    """(x key, group key or None): the first varying override with numeric values, and the
    first other varying override (one line per value). None when no numeric override varies."""
    varying = varying_keys(rows)
    numeric = [k for k in varying
               if all(_as_number(r.overrides.get(k)) is not None for r in rows)]
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

    from gmm_vae.plots import TRUTH_COLOR, VAE_COLOR

    points: dict[str | None, dict[float, list[float]]] = {}
    for r in rows:
        y = _number(r.metrics.get(metric))
        x = _as_number(r.overrides.get(x_key))
        if y is None or x is None:
            continue
        group = r.overrides.get(group_key, "") if group_key else None
        points.setdefault(group, {}).setdefault(x, []).append(y)
    if not points:
        return None

    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    groups = sorted(points, key=lambda g: (_as_number(g) is None, _as_number(g) or 0.0,
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
    from gmm_vae.plots import save_figure

    axes = figure_axes(rows)
    varying = varying_keys(rows)
    common = [f"{k}={rows[0].overrides[k]}" for k in override_keys(rows)
              if k not in varying and k in rows[0].overrides]
    subtitle = ", ".join(common)
    written: dict[str, Path] = {}
    ks = {int(k) for r in rows if (k := _number(r.metrics.get("n_components"))) is not None}
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


def summarize_sweep(sweep_dir: Path) -> dict[str, Path]:
    """Write ``summary.csv``, ``summary.md`` and the figures into ``sweep_dir``; return their
    paths (keys ``csv``, ``markdown`` and, when drawn, ``modes_figure``, ``nll_gap_figure``).

    Raises ConfigError (one line) when ``sweep_dir`` is not a directory or holds no job dir.
    """
    sweep_dir = Path(sweep_dir)
    rows = read_sweep(sweep_dir)
    paths: dict[str, Path] = {"csv": sweep_dir / CSV_NAME, "markdown": sweep_dir / MARKDOWN_NAME}
    atomic_write_text(paths["csv"], render_csv(rows))
    if has_repeats(seed_groups(rows)):
        paths["seeds_csv"] = sweep_dir / SEEDS_CSV_NAME
        atomic_write_text(paths["seeds_csv"], render_seed_csv(rows))
    else:
        (sweep_dir / SEEDS_CSV_NAME).unlink(missing_ok=True)  # stale from an earlier summary
    figures = write_figures(rows, sweep_dir)
    titles = {"modes_figure": "modes captured", "nll_gap_figure": "NLL gap"}
    atomic_write_text(paths["markdown"],
                      render_markdown(rows, sweep_dir, [(titles[k], p)
                                                        for k, p in figures.items()]))
    paths.update(figures)
    return paths


# ---------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gmm_vae.summarize <sweep_dir>``: (re)write the summary, print the table."""
    parser = argparse.ArgumentParser(
        prog="python -m gmm_vae.summarize",
        description="Summarise a Hydra multirun of train.py: summary.csv, summary.md and "
                    "figures in the sweep directory.")
    parser.add_argument("sweep_dir", type=Path,
                        help="the sweep directory, e.g. multirun/2026-11-26/07-41-00")
    args = parser.parse_args(argv)
    try:
        paths = summarize_sweep(args.sweep_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    print(paths["markdown"].read_text("utf-8"))
    for key, path in paths.items():
        print(f"{key + ':':16}{os.fspath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
