"""Checkpoints written before the VAE was split out of the LightningModule keep working.

Then the module was the VAE and its weights were keyed ``encoder.0.weight``; now the training
module holds the plain VAE as ``vae`` and writes ``vae.encoder.0.weight``. A checkpoint in the
old layout is made here from a new one by stripping the prefix (the keys are then exactly the
plain VAE's, as the old module's were), and evaluate.py and a resume must give, number for
number, what they give on the checkpoint as written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from gmm_vae.model.checkpoints import VAE_PREFIX, upgraded_state_dict
from gmm_vae.runs import pipeline
from gmm_vae.runs.rerun import evaluate_run
from tests.conftest import TINY, compose_config

BASE = [*TINY, "analysis.every_n_epochs=0", "analysis.evaluate_at_end=false",
        "data.n_samples=256", "trainer.max_epochs=4"]


class StopAfterFirstEpochs(L.Callback):
    """End the first run after 2 of its 4 epochs, so that it can be resumed."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.current_epoch == 1:
            trainer.should_stop = True


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _without_timings(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "timings_s"}


@pytest.fixture(scope="module")
def two_layouts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same stopped run twice: its last.ckpt as written, and in the pre-split layout."""
    base = tmp_path_factory.mktemp("layouts")
    trained, new, old = base / "trained", base / "new", base / "old"
    cfg = compose_config(BASE)
    with pytest.MonkeyPatch.context() as mp:
        original = pipeline.build_callbacks
        mp.setattr(pipeline, "build_callbacks",
                   lambda c, d: [*original(c, d), StopAfterFirstEpochs()])
        pipeline.train(cfg, trained)
    (trained / ".hydra").mkdir()
    OmegaConf.save(cfg, trained / ".hydra" / "config.yaml")
    # Two copies, so that both differ from the original in the same ways (paths) but one.
    shutil.copytree(trained, new)
    shutil.copytree(trained, old)
    last = old / "checkpoints" / "last.ckpt"
    state = _load(last)
    state["state_dict"] = {k.removeprefix(VAE_PREFIX): v for k, v in state["state_dict"].items()}
    torch.save(state, last)
    return new, old


def test_the_old_layout_is_the_plain_vaes_and_is_upgraded_to_the_new(two_layouts) -> None:
    new, old = two_layouts
    written = _load(new / "checkpoints" / "last.ckpt")["state_dict"]
    stripped = _load(old / "checkpoints" / "last.ckpt")["state_dict"]
    cfg = compose_config(BASE)
    module = pipeline.build_model(cfg, pipeline.build_datamodule(cfg))
    assert list(written) == list(module.state_dict())
    assert all(k.startswith(VAE_PREFIX) for k in written)
    assert list(stripped) == list(module.vae.state_dict())  # "encoder.0.weight", ...
    upgraded = upgraded_state_dict(stripped)
    assert list(upgraded) == list(written)
    assert all(torch.equal(upgraded[k], written[k]) for k in written)
    assert upgraded_state_dict(written) is written


def test_evaluate_gives_the_same_numbers_on_either_layout(two_layouts) -> None:
    new, old = two_layouts
    a = evaluate_run(new, "last", n_samples=500)
    b = evaluate_run(old, "last", n_samples=500)
    assert a["checkpoint"] == b["checkpoint"] == "last"
    assert _without_timings(a) == _without_timings(b)
    assert a["nll"]["gap"] is not None and a["coverage"]["n_samples"] > 0


def test_resuming_either_layout_trains_to_the_same_weights(two_layouts) -> None:
    results = {}
    for run in two_layouts:
        last = run / "checkpoints" / "last.ckpt"
        pipeline.train(compose_config([*BASE, f"ckpt_path={last}"]), run)
        ckpt = _load(last)
        status = json.loads((run / "status.json").read_text())
        assert status["status"] == "completed" and ckpt["epoch"] == 3
        results[run.name] = (ckpt["state_dict"], status["final_metrics"])
    (new_weights, new_metrics), (old_weights, old_metrics) = results["new"], results["old"]
    assert list(old_weights) == list(new_weights)  # written back in the new layout
    for key, value in new_weights.items():
        assert torch.equal(old_weights[key], value), key
    assert old_metrics == new_metrics
