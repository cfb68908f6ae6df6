"""Reading and writing the values that metrics files, configs and tables hold, one way each.

A dotted path into a nested mapping, a number out of whatever a JSON file or a CSV cell holds,
a number for a table cell, text safe inside a markdown cell: the report, the sweep summary, the
memory refusal and the benchmarks all need these, and two copies that drifted apart (one showing
``nan``, the other ``n/a``; one escaping backslashes, the other not) made the same value read
differently in two files. Only the standard library, so every layer may import it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any


def lookup(tree: Any, key: str) -> Any:
    """``tree["a"]["b"]`` for ``key="a.b"``, or None when any part is missing.

    Any mapping works (a JSON dict, an OmegaConf ``DictConfig``), so metrics and configs are
    read the same way.
    """
    node = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def finite_number(value: Any) -> float | None:
    """A finite float, or None for anything else (missing, null, a bool, NaN, non-numeric
    text). Numeric text counts: an override value or a CSV cell reads as its number."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_cell(text: Any) -> Any:
    """A CSV cell back to what was written: ``True``/``False``, an int, a float, or the text.

    ``"3"`` stays an int (a mode count compares equal to another count), ``"0.5"`` and
    ``"1e-3"`` become floats; anything that is not text is returned as it is.
    """
    if not isinstance(text, str):
        return text
    if text in ("True", "False"):
        return text == "True"
    try:
        return float(text) if any(c in text for c in ".eEn") else int(text)
    except ValueError:
        return text


def fmt(value: Any, digits: int = 3) -> str:
    """A value for a table cell: ``n/a`` when missing or not finite, ints as ints, floats to
    ``digits`` places (``digits=0``: rounded to an int), lists joined, text as it is."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            return "n/a"
        return str(round(number)) if digits == 0 else f"{number:.{digits}f}"
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v, digits) for v in value)
    return str(value)


def md_cell(text: str) -> str:
    """Text safe inside a markdown table cell: a pipe, a backslash before one, or a newline
    would break the row."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
