"""One run per directory: a run never writes into another run's results or a running run's.

A run directory is *taken* when it holds a run's results (``RUN_ARTEFACTS``) or when a live
process holds its lock (``.lock``, an exclusive ``flock`` kept for the whole run and released by
the operating system when the process ends, however it ends). Training into a taken directory
is refused in one line, unless the user asks for it: ``resume=<dir>`` continues the run in it,
``overwrite=true`` removes the old run's results first (never a running run's). The check runs
twice: in a Hydra callback before Hydra writes its ``.hydra/`` copy into the directory (so a
refusal changes nothing there), and in ``pipeline.train``, which holds the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gmm_vae.errors import RunDirTaken
from gmm_vae.io import atomic_write_json

LOCK_NAME = ".lock"
# What a train.py run writes, besides Hydra's ``.hydra/`` and ``train.log``: one of these in a
# directory means a run has used it. (``metrics.csv`` and ``mlruns/``: the CSV and MLflow
# loggers, ``gmm_vae.runs.loggers``; ``run_config.yaml``: the config as trained.)
RUN_ARTEFACTS = ("status.json", "checkpoints", "evaluation", "analysis.jsonl", "gmm.yaml",
                 "hparams.yaml", "figures", "metrics.csv", "mlruns", "run_config.yaml")
# Removed with the artefacts by overwrite=true: the old run's Hydra record and logs.
_OLD_RUN_EXTRAS = (".hydra", "train.log")


def owns_run_dir() -> bool:
    """True in the process the user started; False in a DDP rank Lightning (or torchrun)
    re-launched, which replays the command line and shares the run dir it must not claim."""
    return all(os.environ.get(v, "0") in ("", "0") for v in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def lock_holder(run_dir: Path) -> int | None:
    """The pid of the live process that holds ``run_dir``'s lock, or None when it is free."""
    path = run_dir / LOCK_NAME
    if not path.is_file():
        return None
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            text = fh.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


def previous_status(run_dir: Path) -> str | None:
    """The ``status`` of the run whose results ``run_dir`` holds, if any ("unknown" if none)."""
    if not any((run_dir / name).exists() for name in RUN_ARTEFACTS):
        return None
    try:
        return str(json.loads((run_dir / "status.json").read_text())["status"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"


def update_status(run_dir: Path, **extra: Any) -> None:
    """Add ``extra`` to the run's ``status.json`` (atomically; the rest of it stands)."""
    path = run_dir / "status.json"
    try:
        status = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        status = {}
    atomic_write_json(path, {**(status if isinstance(status, dict) else {}), **extra})


def check_free(run_dir: Path, setting: str, overwrite: bool = False,
               resuming: bool = False) -> None:
    """Raise ``RunDirTaken`` (one line) unless a run may write into ``run_dir``.

    ``resuming``: the directory is the run being continued, so its results are expected.
    ``overwrite``: another run's results are removed (by ``clear``) instead of refused.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirTaken(f"{setting}={run_dir} is a file, not a directory: give the path of "
                          "a new (or empty) directory for the run")
    if not run_dir.is_dir():
        return
    holder = lock_holder(run_dir)
    if holder is not None:
        pid = f" (pid {holder})" if holder > 0 else ""
        raise RunDirTaken(f"{setting}={run_dir} is in use by a running run{pid}; wait for it "
                          "to end or choose another directory")
    status = previous_status(run_dir)
    if status is not None and not (resuming or overwrite):
        raise RunDirTaken(f"{setting}={run_dir} already holds a run (status: {status}); "
                          f"continue it with resume={run_dir}, replace it with overwrite=true, "
                          "or choose another directory")


def clear(run_dir: Path, records: bool = True) -> None:
    """Remove an old run's results from ``run_dir`` (for ``overwrite=true``).

    ``records``: its ``.hydra/`` and logs too; false once Hydra has written the new run's.
    Only what a run writes is removed: anything else the user keeps there stays.
    """
    if not run_dir.is_dir():
        return
    names = set(RUN_ARTEFACTS) | (set(_OLD_RUN_EXTRAS) if records else set())
    for path in run_dir.iterdir():
        if path.name in names or path.name.startswith("events.out.tfevents."):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


@contextmanager
def claimed(run_dir: Path, setting: str, overwrite: bool = False,
            resuming: bool = False) -> Iterator[Path]:
    """Check ``run_dir`` is free, clear it if ``overwrite``, and hold its lock within.

    The lock file records this process's pid, which a refused second run names. Hydra's
    record of this run (``.hydra/``, ``train.log``) is already there and stays.
    """
    check_free(run_dir, setting, overwrite=overwrite, resuming=resuming)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK_NAME, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process took it between the check and here
            raise RunDirTaken(f"{setting}={run_dir} is in use by a running run; wait for it "
                              "to end or choose another directory") from None
        if overwrite and not resuming:
            clear(run_dir, records=False)
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield run_dir
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
