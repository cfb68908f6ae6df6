"""A sweep's tables: ``summary.csv``, ``summary_seeds.csv`` and ``summary.md``, as text.

The columns come from the metric registry (``gmm_vae.analysis.registry``): every CSV metric in
``summary.csv``, the headline metrics in ``summary.md`` with a legend defining each one (range,
better direction). Pure rendering: the rows are read by ``gmm_vae.runs.sweep_jobs``, the files
written by ``gmm_vae.runs.summarize``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from gmm_vae.analysis.aggregate import AGGREGATED, SeedGroup, group_by_seed, has_repeats
from gmm_vae.analysis.registry import BY_NAME, HEADLINE, STATUS_FILE, STUDY, Metric, shown
from gmm_vae.runs.sweep_jobs import (
    COMPLETED,
    FAILED,
    METRIC_PATHS,
    UNFINISHED,
    JobRow,
    override_keys,
    varying_keys,
)
from gmm_vae.values import finite_number, fmt, md_cell

OPTUNA_RESULTS = "optimization_results.yaml"

# Columns every row has, before the overrides' and after them.
LEAD_COLUMNS = ("job",)
STATUS_COLUMNS = ("status", "error", "wall_time_s", "objective", "val_loss")


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


def _pair(a: Any, b: Any) -> str:
    return "n/a" if a is None and b is None else f"{fmt(a, 0)} / {fmt(b, 0)}"


def _md_override(text: str) -> str:
    """An override value for the table: a float an Optuna trial drew (0.0007536062461086747)
    is shown to 4 significant digits; the CSV keeps it exact."""
    number = finite_number(text)
    if number is None or not any(c in text for c in ".eE") or len(text) <= 8:
        return text
    return f"{number:.4g}"


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
    lines += ["| " + " | ".join(md_cell(h) for h in headers) + " |",
              "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        status = r.status if not r.error else f"**{r.status}**: {r.error}"
        if r.status == COMPLETED and r.error:
            status = f"{r.status} ({r.error})"
        cells = [r.job, *(_md_override(r.overrides.get(k, "")) for k in varying), status,
                 *(_headline_cell(h, r, best if len(objectives) > 1 else None)
                   for h in headline),
                 fmt(r.wall_time_s, 1)]
        lines.append("| " + " | ".join(md_cell(str(c)) for c in cells) + " |")
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
        text = fmt(value, metric.digits)
        return f"**{text}**" if best is not None and value == best else text
    m = row.metrics
    value = m.get(metric.name)
    if STUDY in metric.shown:
        return _pair(value, m.get(metric.beside[0]))
    if value is None:
        return "n/a"
    text = fmt(value, metric.digits)
    if metric.out_of in m:
        text = f"{text}/{fmt(m[metric.out_of], 0)}"
    if metric.name == _MARKS_COLLAPSE and m.get("posterior_collapsed"):
        text = f"**collapsed** ({text})"
    return text


def seed_groups(rows: Sequence[JobRow]) -> list[SeedGroup]:
    """The sweep's jobs grouped by every override but ``seed`` / ``data.seed``."""
    return group_by_seed([(r.job, r.overrides, r.metrics) for r in rows])


# The seed table's metric columns (each aggregated in ``gmm_vae.analysis.aggregate``).
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
        lines.append("| " + " | ".join(md_cell(c) for c in cells) + " |")
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
        return f"Optuna's best trial: objective {fmt(results['best_value'])} with {params}."
    except (OSError, KeyError, TypeError, AttributeError, yaml.YAMLError):
        return f"`{OPTUNA_RESULTS}` is present but unreadable."
