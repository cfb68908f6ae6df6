"""Bad input costs one line, divergence is caught, resume is exact, writes are atomic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gmm_vae.io import atomic_write_text
from tests.conftest import ROOT, run_script

SPEC_OK = "means: [[0, 0], [4, 4]]\ncovariances: [[[1, 0], [0, 1]], [[1, 0], [0, 1]]]\n" \
          "weights: [0.5, 0.5]\n"

# (overrides, file to create as {spec} / {ckpt}, expected substring of the one-line message)
BAD_INPUTS: list[tuple[list[str], str | None, str]] = [
    (["data.n_components=-3"], None, "data.n_components must be a positive integer (got -3)"),
    (["data.dim=0"], None, "data.dim must be a positive integer (got 0)"),
    (["data.n_samples=0"], None, "data.n_samples must be a positive integer (got 0)"),
    (["data.batch_size=-1"], None, "data.batch_size must be a positive integer (got -1)"),
    (["data.n_samples=2"], None, "data.n_samples must be >= data.n_components = 4 (got 2)"),
    (["data.scale_min=2", "data.scale_max=1"], None, "data.scale_min must be <= data.scale_max"),
    (["data.normalization=zscore"], None,
     "data.normalization must be one of standard, minmax, none (got 'zscore')"),
    (["data.bogus=1"], None, "Key 'bogus' not in 'DataConfig'"),
    (["model.latent_dim=abc"], None, "model.latent_dim: Value 'abc' of type 'str' could not"),
    (["model.latent_dim=0"], None, "model.latent_dim must be a positive integer (got 0)"),
    (["model.hidden_dims=[]"], None, "model.hidden_dims must be a non-empty list of positive"),
    (["model.hidden_dims=[64,-1]"], None, "model.hidden_dims must be a non-empty list"),
    (["model.lr=0"], None, "model.lr must be a positive finite number (got 0.0)"),
    (["model.lr=nan"], None, "model.lr must be a positive finite number (got nan)"),
    (["model.likelihood=bernoulli"], None,
     "model.likelihood must be one of gaussian, sigmoid (got 'bernoulli')"),
    (["model.decoder_covariance=lowrank"], None,
     "model.decoder_covariance must be one of full, diag (got 'lowrank')"),
    (["model.prior=vamp"], None, "model.prior must be one of standard, mog, flow (got 'vamp')"),
    (["model.beta=-1"], None, "model.beta must be a finite number >= 0 (got -1.0)"),
    (["trainer.max_epochs=0"], None, "trainer.max_epochs must be a positive integer (got 0)"),
    (["trainer.max_epochs=1.5"], None, "trainer.max_epochs: Value '1.5' of type 'float'"),
    (["analysis.every_n_epochs=-1"], None, "analysis.every_n_epochs must be an integer >= 0"),
    (["analysis.cluster_criterion=gap"], None,
     "analysis.cluster_criterion must be one of silhouette, bic, elbow (got 'gap')"),
    (["experiment=nope"], None, "Could not find 'experiment/nope'"),
    (["data.spec_path={spec}"], None, "data.spec_path must name an existing YAML file"),
    (["data.spec_path={spec}"], "means: [[0, 0]\n", "data.spec_path"),
    (["data.spec_path={spec}"], SPEC_OK.replace("0.5, 0.5", "0.5, 0.6"),
     "weights must sum to 1"),
    (["data.spec_path={spec}"], SPEC_OK.replace("[[1, 0], [0, 1]]]", "[[1, 2], [2, 1]]]"),
     "positive-definite"),
    (["data.spec_path={spec}"], SPEC_OK.replace("[[1, 0], [0, 1]]]", "[[1, 0, 0]]]"),
     "covariances"),
    (["data.spec_path={spec}"], "means: [[0, 0]]\nweights: [1.0]\n", "covariances"),
    (["ckpt_path={ckpt}"], None, "no such checkpoint file"),
    (["ckpt_path={ckpt}"], "not a checkpoint", "cannot be read (corrupt or truncated"),
    (["resume={spec}"], None, "no such run directory"),
]


@pytest.mark.parametrize(("overrides", "content", "message"), BAD_INPUTS,
                         ids=[" ".join(b[0]) + (" (file)" if b[1] else "") for b in BAD_INPUTS])
def test_bad_input_is_one_line(tmp_path: Path, overrides: list[str], content: str | None,
                               message: str) -> None:
    spec, ckpt = tmp_path / "spec.yaml", tmp_path / "model.ckpt"
    if content is not None:
        (spec if "{spec}" in overrides[0] else ckpt).write_text(content)
    args = [o.format(spec=spec, ckpt=ckpt) for o in overrides]
    run_dir = tmp_path / "run"
    proc = run_script("train.py", ["debug=tiny", *args, f"hydra.run.dir={run_dir}"],
                      cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-1500:]
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and "\n" not in err, err
    assert err.startswith("error: ") and message in err, err
    assert not run_dir.exists(), "a failed start must not leave a run directory"


def _tiny(run_dir: Path, *extra: str) -> list[str]:
    return ["debug=tiny", "analysis.every_n_epochs=0", "analysis.evaluate_at_end=false",
            "logger.tensorboard=false", f"hydra.run.dir={run_dir}", *extra]


def test_nan_guard_stops_with_a_clear_message(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_script("train.py", _tiny(run_dir, "model.lr=1e8", "trainer.max_epochs=3"),
                      cwd=tmp_path)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: training loss became") and "model.lr=100000000.0" in err
    assert "epoch 0" in err
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "TrainingDiverged" in status["error"]


def test_nan_guard_keeps_the_last_good_checkpoint(tmp_path: Path, compose_cfg) -> None:
    """The loss turns NaN in epoch 2: training stops there and last.ckpt holds epoch 1."""
    import lightning as L

    from gmm_vae.runs.callbacks import TrainingDiverged, build_callbacks
    from gmm_vae.runs.pipeline import build_datamodule, build_model

    cfg = compose_cfg(["debug=tiny", "analysis.every_n_epochs=0", "trainer.max_epochs=5"])
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm)
    clean = model.vae.loss_terms

    def poisoned(x: torch.Tensor, kl_weight: float = 1.0) -> dict[str, torch.Tensor]:
        terms = clean(x, kl_weight)
        if model.current_epoch >= 2:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    model.vae.loss_terms = poisoned  # type: ignore[method-assign]
    trainer = L.Trainer(max_epochs=5, logger=False, enable_progress_bar=False,
                        callbacks=build_callbacks(cfg, tmp_path), default_root_dir=tmp_path)
    with pytest.raises(TrainingDiverged, match=r"at epoch 2, step \d+ .*last good weights"):
        trainer.fit(model, datamodule=dm)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_kill_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    epochs = "trainer.max_epochs=30"
    full = tmp_path / "full"
    proc = run_script("train.py", _tiny(full, epochs), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-1500:]

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    child = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *_tiny(killed, epochs)],
                             cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        if last.is_file():
            try:
                epoch = torch.load(last, weights_only=True)["epoch"]
            except Exception:  # being written
                epoch = -1
            if epoch >= 3:
                break
        time.sleep(0.05)
    assert child.poll() is None, "the run finished before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    status = json.loads((killed / "status.json").read_text())
    assert status["status"] == "running"  # what a killed run looks like

    proc = run_script("train.py", [f"resume={killed}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-1500:]
    a = json.loads((full / "status.json").read_text())["final_metrics"]
    b = json.loads((killed / "status.json").read_text())["final_metrics"]
    for key in ("train/loss", "val/loss", "val/recon", "val/kl"):
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key
    wa = torch.load(full / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    wb = torch.load(last, weights_only=True)["state_dict"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-5, atol=1e-6)


def test_resume_rejects_a_checkpoint_of_another_model(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert run_script("train.py", _tiny(run_dir), cwd=tmp_path).returncode == 0
    proc = run_script("train.py", [f"resume={run_dir}", "model.latent_dim=5"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "does not match the config" in proc.stderr and "Traceback" not in proc.stderr


def test_atomic_write_never_leaves_a_half_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")

    def boom(*args, **kwargs):  # the rename fails, as if the process died before it
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "new content")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_gmm_yaml_is_written_atomically(tmp_path: Path) -> None:
    from gmm_vae.data.gmm import GMM

    gmm = GMM.random(3, 2, seed=0)
    gmm.to_yaml(tmp_path / "gmm.yaml")
    assert np.allclose(GMM.from_yaml(tmp_path / "gmm.yaml").means, gmm.means)
    assert [p.name for p in tmp_path.iterdir()] == ["gmm.yaml"]
