"""Command-line glue: turn a user's mistake into one line on stderr and a non-zero exit.

Hydra reports every exception with a (shortened) traceback. For a mistake in a setting that is
noise: the user needs the setting, its value and what is allowed. ``run_cli`` wraps a
``@hydra.main`` function so that configuration errors print ``error: <one line>`` and exit 2,
while genuine bugs keep Hydra's report. ``HYDRA_FULL_ERROR=1`` shows every traceback.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gmm_vae.errors import ConfigError

EXIT_USAGE = 2


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message for a user mistake, or None when ``exc`` looks like a bug."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import OmegaConfBaseException

    from gmm_vae.callbacks import TrainingDiverged

    if isinstance(exc, ConfigError | TrainingDiverged):
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
            sys.exit(EXIT_USAGE)

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
    are left to ``pipeline.run_training``, which knows how to fail one job of a sweep.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from gmm_vae.config import validate

    if cfg.get("resume") or not HydraConfig.initialized():
        return
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return
    try:
        validate(cfg)
        if cfg.data.spec_path:
            from gmm_vae.gmm import GMM

            GMM.from_yaml(cfg.data.spec_path)
    except ConfigError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        remove_unstarted_run_dir(Path(HydraConfig.get().runtime.output_dir))
        print(f"error: {_first_line(str(exc))}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USAGE) from None
