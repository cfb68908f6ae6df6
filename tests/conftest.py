"""Shared helpers: compose configs with Hydra, run the CLI scripts in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# The smallest settings that still exercise every code path: used by most tests.
TINY = ["debug=tiny", "logger.tensorboard=false"]


def compose_config(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """The config Hydra would compose for ``python train.py <overrides>``."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    return compose_config


def run_script(script: str, args: Sequence[str], cwd: Path,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python <script> args`` from ``cwd`` as a user would, capturing its output."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_script


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the tests marked slow (pyproject.toml's markers)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` are skipped unless ``--runslow`` is given, as the marker says."""
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def leaves(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """Every dotted key of a nested dict whose value is not itself a dict."""
    keys: list[str] = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        keys += leaves(value, path + ".") if isinstance(value, dict) else [path]
    return keys
