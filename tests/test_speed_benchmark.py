"""benchmarks/speed.py's GPU modes: they refuse clearly without a GPU, and their run helper works.

The GPU measurements themselves need a CUDA machine; here the parts that do not are tested.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.conftest import ROOT, run_script


def _speed() -> ModuleType:
    spec = importlib.util.spec_from_file_location("speed", ROOT / "benchmarks" / "speed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["speed"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU to measure")
@pytest.mark.parametrize("flag", [["--gpu"], ["--gpu-sweep", "2"]])
def test_gpu_modes_say_in_one_line_that_they_need_a_gpu(tmp_path: Path, flag: list[str]) -> None:
    proc = run_script("benchmarks/speed.py", [*flag, "--run-epochs", "1"], cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.strip() == (f"error: {flag[0]} needs a CUDA GPU, and "
                                   "torch.cuda.is_available() is False here "
                                   f"(torch {torch.__version__})")
    assert proc.stdout == ""


def test_run_helper_reads_the_time_split_of_a_train_py_run(tmp_path: Path) -> None:
    speed = _speed()
    wall, (status,) = speed._run(["debug=tiny", "logger.tensorboard=false",
                                  "trainer.accelerator=cpu", "analysis.every_n_epochs=0"],
                                 tmp_path)
    assert status["status"] == "completed"
    assert 0 < status["train_time_s"] + status["eval_time_s"] <= status["wall_time_s"] + 0.011
    assert status["wall_time_s"] < wall
    assert speed._times(status).startswith(f"training {status['train_time_s']:.1f} s, ")
