"""train.py end to end, as a user runs it, and the reproducibility of a run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from gmm_vae.data.gmm import GMM
from gmm_vae.runs.pipeline import build_datamodule, train
from tests.conftest import TINY, compose_config


def test_train_py_writes_a_complete_run_dir(tmp_path: Path, run_cli) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli("train.py", ["debug=tiny", "analysis.evaluate_at_end=false",
                                "analysis.every_n_epochs=0", f"hydra.run.dir={run_dir}"],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    cfg = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert cfg["trainer"]["max_epochs"] == 2
    # gmm.yaml is the mixture the run trained on, to the last bit.
    gmm, truth = GMM.from_yaml(run_dir / "gmm.yaml"), build_datamodule(compose_config(TINY)).gmm
    for name in ("means", "covariances", "weights"):
        np.testing.assert_array_equal(getattr(gmm, name), getattr(truth, name), err_msg=name)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "completed"
    assert np.isfinite(status["final_metrics"]["val/loss"])
    times = [status[k] for k in ("train_time_s", "eval_time_s", "wall_time_s")]
    assert all(isinstance(t, float | int) for t in times), status
    assert times[0] + times[1] == pytest.approx(times[2], abs=0.011)  # each rounded to 0.01 s
    assert times[1] < times[0], status  # no final evaluation: the rest is the status file
    line = re.search(r"Finished 2 epochs: training ([\d.]+) s, evaluation ([\d.]+) s "
                     r"\(total ([\d.]+) s\)\.", proc.stdout)
    assert line, proc.stdout
    np.testing.assert_allclose([float(g) for g in line.groups()], times, atol=0.06)
    assert f"tensorboard --logdir {run_dir}" in proc.stdout


def test_tensorboard_events_hold_train_and_val_curves(tmp_path: Path, compose_cfg) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_cfg(["debug=tiny", "analysis.every_n_epochs=0",
                       "analysis.evaluate_at_end=false", "trainer.log_every_n_steps=1"])
    train(cfg, tmp_path)
    acc = EventAccumulator(str(tmp_path)).Reload()
    tags = set(acc.Tags()["scalars"])
    for split in ("train", "val"):
        for term in ("loss", "recon", "kl"):
            assert f"{split}/{term}" in tags, (split, term, tags)
            assert len(acc.Scalars(f"{split}/{term}")) == 2, (split, term)  # one per epoch
    # Each epoch's point is the mean of its 8 steps (debug=tiny: 512 points, batches of 64).
    steps = [e.value for e in acc.Scalars("train/loss_step")]
    assert len(steps) == 16
    np.testing.assert_allclose([e.value for e in acc.Scalars("train/loss")],
                               [np.mean(steps[:8]), np.mean(steps[8:])], rtol=1e-5)


def test_same_seeds_give_same_data_and_losses(tmp_path: Path, compose_cfg) -> None:
    overrides = [*TINY, "analysis.every_n_epochs=0", "analysis.evaluate_at_end=false",
                 "seed=3", "data.seed=5"]
    cfg = compose_cfg(overrides)
    np.testing.assert_array_equal(build_datamodule(cfg).x_train, build_datamodule(cfg).x_train)
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")
    sa = json.loads((tmp_path / "a" / "status.json").read_text())["final_metrics"]
    sb = json.loads((tmp_path / "b" / "status.json").read_text())["final_metrics"]
    assert sa == sb
    train(compose_cfg([*overrides[:-2], "seed=4", "data.seed=5"]), tmp_path / "c")
    sc = json.loads((tmp_path / "c" / "status.json").read_text())["final_metrics"]
    assert sc["val/loss"] != sa["val/loss"]


def test_user_mistake_is_one_line_and_leaves_no_run_dir(tmp_path: Path, run_cli) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli("train.py", ["debug=tiny", "data.n_components=-3",
                                f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: data.n_components must be a positive integer (got -3)"
    assert not run_dir.exists()
