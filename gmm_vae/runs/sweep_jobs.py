"""A sweep's job directories read as rows: overrides, status and headline metrics per job.

A multirun leaves one directory per job (``multirun/<date>/<time>/<job num>/``), each with its
overrides, ``status.json`` and, when it finished, ``evaluation/metrics.json``. A job dir that is
broken (corrupt JSON, missing files, killed mid-run) is still a row, with the problem in its
``errors``: a summary that crashes on the one odd job hides all the others. Only the standard
library and PyYAML: reading a sweep never waits for torch to import.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gmm_vae.analysis.registry import CSV, shown
from gmm_vae.errors import ConfigError
from gmm_vae.values import finite_number, lookup

COMPLETED, FAILED, UNFINISHED = "completed", "failed", "unfinished"

# CSV column -> path in evaluation/metrics.json, from the registry. Flat names, so a spreadsheet
# or pandas reads them without knowing the nesting; ``_truth`` columns are the ground truth's.
METRIC_PATHS: dict[str, str] = {m.name: m.key for m in shown(CSV)}

# Job dirs are looked for this deep below the sweep dir: Hydra's default subdir is one level,
# a custom ``hydra.sweep.subdir`` (e.g. an override_dirname holding a path) may add a few.
_MAX_DEPTH = 3


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
        row.wall_time_s = finite_number(status.get("wall_time_s"))
        row.objective = finite_number(status.get("objective"))
        final = status.get("final_metrics")
        if isinstance(final, dict):
            row.val_loss = finite_number(final.get("val/loss"))

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
