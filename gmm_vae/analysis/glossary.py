"""The README's metric glossary, rendered from the registry (``gmm_vae.analysis.registry``).

The registry is the table; this module only turns it into markdown, so the README's "Metrics"
section is generated, never written by hand (a test compares the two):
``python -m gmm_vae.analysis.glossary --markdown``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from itertools import pairwise

from gmm_vae.analysis.registry import METRICS, METRICS_FILE, companions
from gmm_vae.values import md_cell


def _relative(key: str, base: str, dot: str = "") -> str:
    """``key`` without the group it shares with ``base``: ``k_latent`` beside ``...k_data``."""
    group, _, leaf = key.rpartition(".")
    return dot + leaf if group and group == base.rpartition(".")[0] else key


def glossary_markdown() -> str:
    """The README's "Metrics" table: one row per metric, its companions in the same row."""
    lines = ["| key | what it is | range, better |", "|---|---|---|"]
    for metric in METRICS:
        if metric.part_of:
            continue
        others = companions(metric)
        # The main key's group first; a key in the group of the one before it is ``.leaf``.
        same = [m.key for m in others if _relative(m.key, metric.key) != m.key]
        ordered = [metric.key, *same, *(m.key for m in others if m.key not in same)]
        shown_keys = [ordered[0]] + [_relative(k, prev, ".")
                                     for prev, k in pairwise(ordered)]
        keys = ", ".join(f"`{k}`" for k in shown_keys)
        if metric.source != METRICS_FILE:
            keys += f" (`{metric.source}`)"
        what = "; ".join([metric.definition, *(f"`{_relative(m.key, metric.key)}`: "
                                               f"{m.definition}" for m in others)])
        lines.append(f"| {md_cell(keys)} | {md_cell(what)} | {md_cell(metric.range_text)} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m gmm_vae.analysis.glossary --markdown``: print the README's metric glossary."""
    parser = argparse.ArgumentParser(prog="python -m gmm_vae.analysis.glossary",
                                     description="The metric registry of gmm-vae.")
    parser.add_argument("--markdown", action="store_true",
                        help="print the README's Metrics table (the glossary)")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(glossary_markdown())
    else:
        for m in METRICS:
            print(f"{m.name:26} {m.key:36} {m.better.value:7} {m.shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
