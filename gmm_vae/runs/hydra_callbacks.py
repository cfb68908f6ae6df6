"""Hydra callbacks: claim the run dir before a run, summarise a multirun when it ends."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SummarizeSweep(Callback):
    """On ``on_multirun_end`` write summary.csv / summary.md / figures into the sweep dir.

    Registered in ``conf/train.yaml`` (``hydra.callbacks.summarize``), so every multirun of
    train.py ends with one table; ``python -m gmm_vae.runs.summarize <sweep dir>`` does the same by
    hand (a killed sweep, one still running, or one run by a cluster launcher).
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from gmm_vae.runs.summarize import summarize_sweep

        # Only the process the user started writes the summary, not a DDP child.
        if _is_ddp_child():
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        try:
            paths = summarize_sweep(sweep_dir)
        except Exception as exc:  # a summary problem must never hide the sweep's own results
            log.error("could not summarise %s: %s", sweep_dir, exc)
            return
        print(f"Sweep summary: {paths['markdown']}", flush=True)


class ClaimRunDir(Callback):
    """Before a run: refuse a run dir that holds another run, before Hydra writes into it.

    Hydra copies the config into ``<run dir>/.hydra/`` before the task runs, so a check in the
    task would come after the old run's record was overwritten. Here nothing has been written
    yet: a taken directory (``gmm_vae.runs.rundir``) ends the command with one line and exit code 2
    (Hydra turns a callback's exceptions into warnings, so this exits itself), and
    ``overwrite=true`` clears the old run first. A multirun is checked at
    ``on_multirun_start``: a sweep dir whose jobs hold results is refused the same way, unless
    ``sweep_resume=true`` asks to finish it (each job then decides for itself:
    ``gmm_vae.runs.sweep_resume``); a job still running is refused either way.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from gmm_vae.runs import rundir

        if config.get("resume") or _is_ddp_child():
            return  # resume continues another dir, claimed by train(); a DDP child shares it
        run_dir = Path(str(config.hydra.run.dir))
        overwrite = bool(config.get("overwrite"))
        with _refusal_exits():
            rundir.check_free(run_dir, "hydra.run.dir", overwrite=overwrite)
        if overwrite:
            rundir.clear(run_dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from gmm_vae.errors import RunDirTaken
        from gmm_vae.runs import rundir

        sweep_dir = Path(str(config.hydra.sweep.dir))
        if _is_ddp_child():
            return
        overwrite = bool(config.get("overwrite"))
        resume = bool(config.get("sweep_resume"))
        with _refusal_exits():
            if resume and overwrite:
                raise RunDirTaken("sweep_resume=true and overwrite=true cannot be combined: "
                                  "sweep_resume keeps the jobs that are done, overwrite clears "
                                  "them all")
            rundir.check_free(sweep_dir, "hydra.sweep.dir")  # a file in its place
            jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir()) \
                if sweep_dir.is_dir() else []
            for job in jobs:
                running = rundir.lock_holder(job) is not None
                status = "running" if running else rundir.previous_status(job)
                if status is not None and (running or not (overwrite or resume)):
                    advice = ("wait for it to end" if running else "finish it with "
                              "sweep_resume=true, replace it with overwrite=true")
                    raise RunDirTaken(f"hydra.sweep.dir={sweep_dir} already holds a sweep (job "
                                      f"{job.name}: {status}); {advice}, or choose another "
                                      "directory")
        for job in jobs if overwrite else []:
            rundir.clear(job)


@contextmanager
def _refusal_exits() -> Iterator[None]:
    """A ``RunDirTaken`` inside becomes ``error: <line>`` on stderr and exit code 2."""
    from gmm_vae.errors import RunDirTaken

    try:
        yield
    except RunDirTaken as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _is_ddp_child() -> bool:
    """A process Lightning re-launched as a DDP rank > 0 (it replays the whole command line)."""
    from gmm_vae.runs.rundir import owns_run_dir

    return not owns_run_dir()
