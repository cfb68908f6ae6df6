"""The default recipe does not collapse on a tight mixture; without its warm-up it does.

The literature's ring (8 components of std 0.01 on a unit circle) collapsed the earlier default
on every seed: one Gaussian over the data (docs/fidelity.md, "Posterior collapse on the ring"). A
short run is enough to see the difference: collapse is decided in the first epochs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gmm_vae.data import suite
from gmm_vae.runs.pipeline import quiet_lightning, train
from tests.conftest import compose_config

NO_WARMUP = ["model.kl_warmup_epochs=0", "model.decoder_var_warmup_epochs=0",
             "model.decoder_init_log_var=0"]


def short_ring_run(tmp_path: Path, extra: list[str]) -> dict:
    spec = tmp_path / "ring8.yaml"
    suite.ring().to_yaml(spec)
    cfg = compose_config([
        f"data.spec_path={spec}", "data.n_samples=4000", "data.n_val=500", "data.n_test=1000",
        "trainer.max_epochs=40", "trainer.enable_progress_bar=false", "logger.tensorboard=false",
        "analysis.every_n_epochs=0", "analysis.tsne_every_n_epochs=0",
        "analysis.eval_samples=2000", "analysis.coverage_samples=100000",
        "analysis.iwae_samples=16", "analysis.n_samples=500", "analysis.tsne_points=200",
        "torch_threads=1", *extra])
    quiet_lightning()
    train(cfg, tmp_path / "run")
    return json.loads((tmp_path / "run" / "evaluation" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return short_ring_run(tmp_path_factory.mktemp("default"), [])


def test_default_recipe_does_not_collapse_on_the_ring(default_run: dict) -> None:
    latent, cov = default_run["latent"], default_run["coverage"]
    assert not latent["collapsed"], latent["verdict"]
    assert latent["active_units"] == 2
    assert cov["modes_captured"] == 8
    assert cov["hq_ratio"] > 0.5  # a collapsed model: 0.003; converged (300 epochs): 0.99
    assert default_run["nll"]["gap"] < 1.0  # a collapsed model: 6.4 nats


def test_without_the_warmup_the_ring_collapses_and_the_run_says_so(tmp_path: Path) -> None:
    metrics = short_ring_run(tmp_path, NO_WARMUP)
    assert metrics["latent"]["collapsed"]
    assert metrics["coverage"]["modes_captured"] == 0
    assert metrics["coverage"]["weights_tv"] > 0.9
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["posterior_collapsed"] is True
    assert "posterior collapsed" in status["latent"]
    report = (tmp_path / "run" / "evaluation" / "report.md").read_text()
    assert "Warning: posterior collapsed" in report
