"""Command-line glue: turn a user's mistake into one line on stderr and a non-zero exit.

Hydra reports every exception with a (shortened) traceback. For a mistake in a setting that is
noise: the user needs the setting, its value and what is allowed. ``run_cli`` wraps a
``@hydra.main`` function so that configuration errors print ``error: <one line>`` and exit 2,
while genuine bugs keep Hydra's report. ``HYDRA_FULL_ERROR=1`` shows every traceback.

This is the top layer under the entry points: ``train_main`` and ``evaluate_main`` are the bodies
of ``train.py`` and ``evaluate.py``. It imports the pipeline (lazily, so a typo fails before
torch loads); nothing in the package imports it back.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gmm_vae.errors import ConfigError, RunDirTaken, RunInterrupted, TrainingDiverged, WriteFailed

_log = logging.getLogger(__name__)

EXIT_USAGE = 2
# A result that could not be written (disk full): not a usage mistake, still one line.
EXIT_FAILED = 1


def exit_code(exc: BaseException) -> int:
    """1 for a result that could not be written (a full disk), 2 for anything the settings can
    fix (a mistake in them, or a learning rate that made training diverge)."""
    return EXIT_FAILED if isinstance(exc, WriteFailed) else EXIT_USAGE


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for a user mistake, or None when ``exc`` looks like a bug."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, ConfigError | TrainingDiverged | WriteFailed):
        return _first_line(str(exc))
    try:
        from lightning.fabric.utilities.exceptions import MisconfigurationException
    except ImportError:  # pragma: no cover
        MisconfigurationException = ()  # type: ignore[assignment,misc]
    if MisconfigurationException and isinstance(exc, MisconfigurationException):
        return f"trainer: {_first_line(str(exc))}"
    if isinstance(exc, OverrideParseException | MissingConfigException):
        return _first_line(str(exc))
    if isinstance(exc, ConfigCompositionException):
        cause = exc.__cause__
        if isinstance(cause, OmegaConfBaseException):
            return _omegaconf_message(cause)
        return _first_line(str(exc))
    if isinstance(exc, OmegaConfBaseException):
        return _omegaconf_message(exc)
    return None


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "invalid configuration"


def _omegaconf_message(exc: Any) -> str:
    """OmegaConf messages end with a multi-line context block; keep the statement and the key."""
    msg = getattr(exc, "msg", None) or str(exc)
    head = _first_line(msg)
    key = getattr(exc, "full_key", None)
    if key and key not in head:
        return f"{key}: {head}"
    return head


def remove_unstarted_run_dir(run_dir: Path) -> None:
    """Delete a run dir that holds nothing but Hydra's bookkeeping, so no half run is left."""
    if not run_dir.is_dir():
        return
    allowed = {".hydra", "train.log", "evaluate.log", "status.json"}
    if all(p.name in allowed for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)


def run_cli(main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` function with one-line errors for user mistakes (exit code 2)."""
    import hydra._internal.utils as hydra_utils

    original = hydra_utils.run_and_report

    def run_and_report(func: Callable[[], Any]) -> Any:
        try:
            return func()
        except Exception as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            message = user_error_message(exc)
            if message is None:
                return original(lambda e=exc: _reraise(e))
            print(f"error: {message}", file=sys.stderr, flush=True)
            sys.exit(exit_code(exc))

    hydra_utils.run_and_report = run_and_report
    try:
        main()
    finally:
        hydra_utils.run_and_report = original


def _reraise(exc: BaseException) -> Any:
    raise exc


def validate_or_exit(cfg: Any) -> None:
    """A single run's config and spec file, checked before torch loads (about a second).

    On a mistake: one line on stderr, the empty run dir removed, exit 2. Multiruns and resumes
    are left to ``train_main``, which knows how to fail one job of a sweep.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from gmm_vae.config import check_run_mode, validate
    from gmm_vae.runs.loggers import check_available

    if not HydraConfig.initialized() or HydraConfig.get().mode == RunMode.MULTIRUN:
        return
    try:
        check_run_mode(cfg, multirun=False)
        if cfg.get("resume"):
            return
        validate(cfg)
        check_available(cfg)
        if cfg.data.spec_path:
            from gmm_vae.data.gmm import GMM

            GMM.from_yaml(cfg.data.spec_path)
    except ConfigError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        remove_unstarted_run_dir(Path(HydraConfig.get().runtime.output_dir))
        print(f"error: {_first_line(str(exc))}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USAGE) from None


def train_main(cfg: Any) -> float:
    """train.py's body: ``train`` in the Hydra run dir, with failure handling per run mode.

    A single run lets errors propagate (the CLI prints them in one line) and removes a run dir
    that a configuration error left empty. In a multirun one bad combination must not kill the
    sweep: the job is marked failed in ``status.json`` and returns NaN, and the others go on.
    ``rerun=<dir>`` trains a copy of that run here and says whether its numbers reproduce;
    in a multirun, ``sweep_resume=true`` lets each job skip, continue or re-run what its
    directory holds (``gmm_vae.runs.sweep_resume``).
    """
    from gmm_vae.runs import reproduce, rundir, sweep_resume
    from gmm_vae.runs.pipeline import hydra_run_dir, is_multirun, train, write_status
    from gmm_vae.runs.resume import explicit_overrides, resume_config

    run_dir = hydra_run_dir()
    note: dict[str, Any] = {}
    try:
        source = None
        if cfg.rerun:
            cfg, source = reproduce.rerun_config(cfg, explicit_overrides())
            reproduce.record_config(run_dir, cfg)
            note[reproduce.STATUS_KEY] = {"run_dir": str(source)}
        if is_multirun() and cfg.sweep_resume:
            plan = sweep_resume.plan_job(run_dir, cfg)
            print(plan.line(run_dir), flush=True)
            if plan.action == sweep_resume.SKIPPED:
                sweep_resume.record_skip(run_dir, plan)
                return float("nan") if plan.objective is None else plan.objective
            note[sweep_resume.STATUS_KEY] = plan.note()
            if plan.action == sweep_resume.CONTINUED:
                cfg.resume = str(run_dir)
            elif plan.action == sweep_resume.RERUN:
                rundir.clear(run_dir, records=False)  # its .hydra/ is this launch's already
        if cfg.resume:
            hydra_dir = run_dir
            cfg, run_dir = resume_config(cfg)
            if hydra_dir != run_dir:
                remove_unstarted_run_dir(hydra_dir)  # the resumed run lives in its own dir
        score = train(cfg, run_dir, note=note)
        if source is not None:
            reproduce.report(source, run_dir)
        return score
    except RunInterrupted as exc:
        # Not an error of the user's: one line saying where things stand, the shell's exit code
        # for a process ended by this signal (130 for Ctrl-C, 143 for SIGTERM). A sweep stops.
        remove_unstarted_run_dir(run_dir)
        where = (f"checkpoints/last.ckpt is intact; continue with: python train.py "
                 f"resume={run_dir}" if (run_dir / "checkpoints" / "last.ckpt").is_file()
                 else "no checkpoint had been written yet")
        print(f"interrupted by {exc.signal_name}: {where}", file=sys.stderr, flush=True)
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:
        if not is_multirun():
            message = user_error_message(exc)
            if message is None:
                raise
            remove_unstarted_run_dir(run_dir)
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            # Exit here rather than re-raise: Hydra would first print its own banner line.
            print(f"error: {message}", file=sys.stderr, flush=True)
            raise SystemExit(exit_code(exc)) from None
        message = user_error_message(exc) or f"{type(exc).__name__}: {exc}"
        if isinstance(exc, RunDirTaken):  # the directory is another run's: leave it alone
            _log.error("job refused: %s", message)
            return float("nan")
        write_status(run_dir, "failed", error=message.splitlines()[0] if message else "",
                     **note)
        _log.error("job failed: %s", message)
        return float("nan")


def judge_main(cfg: Any) -> dict[str, Any]:
    """``python evaluate.py samples=<file> truth=<gmm.yaml | run dir> [out=<dir>]``: judge a
    samples file from anywhere, write its ``evaluation/`` files and print the verdict."""
    from gmm_vae.analysis.judge import default_out_dir, format_judgement, judge

    if cfg.get("run_dir") is not None:
        raise ConfigError("run_dir judges a trained run, samples= and truth= a samples file: "
                          "pass one or the other")
    if cfg.get("samples") is None or cfg.get("truth") is None:
        raise ConfigError("samples= and truth= go together: python evaluate.py "
                          "samples=<(N, D) .npy or .csv> truth=<gmm.yaml or a run directory>")
    out = Path(str(cfg.out)).expanduser() if cfg.get("out") else default_out_dir(cfg.samples)
    metrics = judge(str(cfg.samples), str(cfg.truth), out, cfg.n_samples, cfg.seed,
                    bool(cfg.get("c2st", True)))
    print(format_judgement(metrics, out), flush=True)
    return metrics


def evaluate_main(cfg: Any) -> dict[str, Any]:
    """evaluate.py's body: ``evaluate_run`` on the command's settings (``judge_main`` for a
    samples file), with one-line errors.

    A user mistake is printed as ``error: <one line>`` with exit code 2 right here: re-raised,
    Hydra would first print its own "Error executing job" banner. ``HYDRA_FULL_ERROR=1`` shows
    the traceback instead.
    """
    try:
        if cfg.get("samples") is not None or cfg.get("truth") is not None:
            return judge_main(cfg)
        from gmm_vae.runs.rerun import evaluate_run

        return evaluate_run(cfg.run_dir, cfg.ckpt, cfg.n_samples, cfg.seed)
    except Exception as exc:
        # A ConfigError is already one line; asking cli for it would import Lightning first.
        message = str(exc) if isinstance(exc, ConfigError) else user_error_message(exc)
        if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(exit_code(exc)) from None
