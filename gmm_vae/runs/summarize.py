"""One table for a whole sweep: ``summary.csv``, ``summary.md`` and two figures in the sweep dir.

A multirun leaves one directory per job (``multirun/<date>/<time>/<job num>/``), each with its
overrides, ``status.json`` and, when it finished, ``evaluation/metrics.json``. Reading twelve of
them by hand is how results get mis-copied, so ``summarize_sweep`` collects them into one row per
job. It is called by the Hydra callback when a multirun ends (``gmm_vae.runs.hydra_callbacks``) and
from the shell for a sweep that was killed, is still running, or ran on a cluster::

    python -m gmm_vae.runs.summarize multirun/2026-11-26/07-41-00

A job dir that is broken (corrupt JSON, missing files, killed mid-run) is still a row, with the
problem in its ``error`` column: a summary that crashes on the one odd job hides all the others.
Every file is written atomically. The job dirs are read by ``gmm_vae.runs.sweep_jobs``, the tables
rendered by ``gmm_vae.runs.summary_tables`` (columns from ``gmm_vae.analysis.registry``) and
the figures drawn by ``gmm_vae.runs.summary_figures``; this module writes the files and is the
command line. Only the standard library, PyYAML and (for the figures) matplotlib are used, so
summarising never waits for torch to import.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gmm_vae.analysis.aggregate import has_repeats
from gmm_vae.errors import ConfigError
from gmm_vae.io import atomic_write_text
from gmm_vae.runs.summary_figures import MODES_FIGURE, NLL_GAP_FIGURE, figure_axes, write_figures
from gmm_vae.runs.summary_tables import render_csv, render_markdown, render_seed_csv, seed_groups
from gmm_vae.runs.sweep_jobs import METRIC_PATHS, JobRow, find_job_dirs, read_job, read_sweep

CSV_NAME = "summary.csv"
SEEDS_CSV_NAME = "summary_seeds.csv"
MARKDOWN_NAME = "summary.md"

__all__ = ["CSV_NAME", "MARKDOWN_NAME", "METRIC_PATHS", "MODES_FIGURE", "NLL_GAP_FIGURE",
           "SEEDS_CSV_NAME", "JobRow", "figure_axes", "find_job_dirs", "main", "read_job",
           "read_sweep", "summarize_sweep"]


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
    """``python -m gmm_vae.runs.summarize <sweep_dir>``: (re)write the summary, print the table."""
    parser = argparse.ArgumentParser(
        prog="python -m gmm_vae.runs.summarize",
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
