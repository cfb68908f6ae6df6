"""Ctrl-C and SIGTERM end a run cleanly: a loadable checkpoint, status.json naming the signal,
and ``resume=<run_dir>`` continuing to the same weights as a run never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, run_script

EPOCHS = "trainer.max_epochs=30"


def _tiny(run_dir: Path, *extra: str) -> list[str]:
    return ["debug=tiny", "analysis.every_n_epochs=0", "analysis.evaluate_at_end=false",
            "logger.tensorboard=false", f"hydra.run.dir={run_dir}", *extra]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("full") / "run"
    proc = run_script("train.py", _tiny(run_dir, EPOCHS), cwd=run_dir.parent)
    assert proc.returncode == 0, proc.stderr[-1500:]
    return run_dir


def _start_and_signal(run_dir: Path, sig: signal.Signals) -> subprocess.CompletedProcess[str]:
    """Start a run, wait until epoch 3 is checkpointed, send ``sig``, wait for the exit."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    child = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *_tiny(run_dir, EPOCHS)],
                             cwd=run_dir.parent, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        if last.is_file():
            try:
                if torch.load(last, weights_only=True)["epoch"] >= 3:
                    break
            except Exception:  # being written
                pass
        time.sleep(0.05)
    assert child.poll() is None, "the run finished before it could be interrupted"
    child.send_signal(sig)
    out, err = child.communicate(timeout=60)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_the_run_cleanly_and_resume_continues_it(
        tmp_path: Path, uninterrupted: Path, sig: signal.Signals) -> None:
    run_dir = tmp_path / "run"
    proc = _start_and_signal(run_dir, sig)
    assert proc.returncode == 128 + int(sig), proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr, proc.stderr[-1500:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"interrupted by {sig.name}: ") and f"resume={run_dir}" in line, line
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "interrupted" and status["signal"] == sig.name, status
    last = run_dir / "checkpoints" / "last.ckpt"
    assert status["checkpoint"] == str(last)
    ckpt = torch.load(last, weights_only=True)  # loadable, a whole epoch's
    assert ckpt["epoch"] >= 3 and all(torch.isfinite(v).all()
                                      for v in ckpt["state_dict"].values())

    proc = run_script("train.py", [f"resume={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    wa = torch.load(uninterrupted / "checkpoints" / "last.ckpt", weights_only=True)
    wb = torch.load(last, weights_only=True)
    assert wa["epoch"] == wb["epoch"]
    for k in wa["state_dict"]:
        torch.testing.assert_close(wa["state_dict"][k], wb["state_dict"][k], rtol=1e-5,
                                   atol=1e-6)
