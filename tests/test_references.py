"""The reference models are first-class runs: ``python train.py model=gaussian_mixture`` /
``model=spline_flow`` fit on the run's data, are judged by the VAE's evaluation (exact NLL, no
latent instruments), leave a run directory that ``evaluate.py`` re-scores number for number,
and refuse settings that mean nothing to them in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from gmm_vae.data.datamodule import GMMDataModule
from gmm_vae.errors import ConfigError
from gmm_vae.model.references import (
    GaussianMixtureReference,
    SplineFlowReference,
    fit_reference,
    load_reference,
)
from gmm_vae.runs.pipeline import train
from gmm_vae.runs.reference_run import CHECKPOINT
from gmm_vae.runs.rerun import evaluate_run
from tests.conftest import TINY, compose_config

# Big enough for EM to find the four components, small enough for a test.
FIT = ["data.n_samples=3000", "analysis.eval_samples=2000", "analysis.coverage_samples=4000",
       "analysis.c2st=false"]


@pytest.fixture(scope="module")
def gm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("gm")
    cfg = compose_config([*TINY, *FIT, "model=gaussian_mixture"])
    train(cfg, run_dir)
    (run_dir / ".hydra").mkdir()  # what train.py's Hydra writes beside the run
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return run_dir


def test_the_mixture_fit_is_judged_by_the_vae_evaluation_and_nearly_perfect(gm_run: Path) -> None:
    status = json.loads((gm_run / "status.json").read_text())
    assert status["status"] == "completed" and status["model"] == "gaussian_mixture"
    assert status["n_params"] == 4 * (3 + 6) + 3
    m = json.loads((gm_run / "evaluation" / "metrics.json").read_text())
    # The right model class on 3,000 points: every mode, the weights and the density right.
    assert m["coverage"]["modes_captured"] == 4
    assert m["coverage"]["weights_tv"] < 0.05
    assert m["nll"]["exact"] is True and abs(m["nll"]["gap"]) < 0.03
    # No latent space: no latent instruments, said so, and no latent figure.
    assert "latent" not in m and "latent" in m["skipped"]
    assert "k_latent" not in m["clusters"]["vae_samples"]
    files = {p.name for p in (gm_run / "evaluation").iterdir()}
    assert {"metrics.json", "samples.npy", "report.md", "pairwise.png"} <= files
    assert "tsne_latent.png" not in files
    report = (gm_run / "evaluation" / "report.md").read_text()
    assert "reference GaussianMixture(K=true, 5 inits)" in report
    assert "tsne_latent" not in report and "VAE samples" not in report
    assert (gm_run / CHECKPOINT).is_file() and (gm_run / "gmm.yaml").is_file()


def test_evaluate_py_rescores_a_reference_run_number_for_number(gm_run: Path,
                                                                tmp_path: Path) -> None:
    before = json.loads((gm_run / "evaluation" / "metrics.json").read_text())
    after = evaluate_run(gm_run, "last")
    before.pop("timings_s"), after.pop("timings_s")
    assert after == before
    with pytest.raises(ConfigError, match=r"ckpt=best: a reference model's run has one fitted"):
        evaluate_run(gm_run, "best")


def test_a_worse_reference_scores_worse(gm_run: Path, tmp_path: Path) -> None:
    """A known answer with a broken model: a one-component fit of four modes misses three."""
    train(compose_config([*TINY, *FIT, "model=gaussian_mixture",
                          "model.reference_components=1"]), tmp_path)
    m = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    good = json.loads((gm_run / "evaluation" / "metrics.json").read_text())
    assert m["coverage"]["modes_captured"] <= 1
    assert m["nll"]["gap"] > good["nll"]["gap"] + 0.5


def test_the_spline_flow_saves_and_loads_the_same_density_and_samples(tmp_path: Path) -> None:
    cfg = compose_config([*TINY, "model=spline_flow", "trainer.max_epochs=3"])
    dm = GMMDataModule(**cfg.data)
    flow = fit_reference(cfg.model, dm, 3, seed=0)
    assert isinstance(flow, SplineFlowReference)
    again = load_reference(flow.state())
    x = dm.x_test[:50]
    np.testing.assert_allclose(again.log_prob(x), flow.log_prob(x))
    np.testing.assert_array_equal(again.sample(20, seed=3), flow.sample(20, seed=3))
    # Data coordinates: the change of variables of the normaliser is in the density.
    z = torch.from_numpy((x - dm.normalizer.shift) / dm.normalizer.scale).float()
    with torch.no_grad():
        lp_norm = flow.flow().log_prob(z).double().numpy()
    np.testing.assert_allclose(flow.log_prob(x), lp_norm - np.log(dm.normalizer.scale).sum(),
                               rtol=1e-5)
    # Training: a lower NLL than the untrained flow on the same points.
    fresh = SplineFlowReference(dm.dim, 5, 64, dm.normalizer.shift, dm.normalizer.scale)
    assert flow.log_prob(x).mean() > fresh.log_prob(x).mean()


def test_a_spline_flow_run_completes_through_train(tmp_path: Path) -> None:
    train(compose_config([*TINY, "model=spline_flow"]), tmp_path)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "completed" and status["model"] == "spline_flow"
    m = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert m["nll"]["exact"] is True and np.isfinite(m["nll"]["gap"])


def test_the_mixture_reference_samples_its_own_fit() -> None:
    cfg = compose_config([*TINY, "data.n_samples=3000"])
    dm = GMMDataModule(**cfg.data)
    ref = GaussianMixtureReference.fit(dm.x_train, 4, 2, seed=0)
    x = ref.sample(20_000, seed=1)
    np.testing.assert_allclose(x.mean(axis=0), ref.gmm.weights @ ref.gmm.means, atol=0.1)
    np.testing.assert_array_equal(ref.sample(50, seed=1), ref.sample(50, seed=1))
    assert not np.array_equal(ref.sample(50, seed=1), ref.sample(50, seed=2))


@pytest.mark.parametrize(("overrides", "message"), [
    (["model=gaussian_mixture", "resume=/tmp/x"], r"resume=/tmp/x: model=gaussian_mixture is a "
     r"reference model, fitted in one go"),
    (["model=spline_flow", "ckpt_path=a.ckpt"], r"ckpt_path=a.ckpt: model=spline_flow is a "
     r"reference"),
    (["model.family=gan"], r"model.family must be one of"),
    (["model=gaussian_mixture", "model.reference_components=0"],
     r"model.reference_components must be"),
    (["model=gaussian_mixture", "model.reference_inits=0"], r"model.reference_inits must be"),
])
def test_settings_a_reference_cannot_honour_are_refused_in_one_line(
        overrides: list[str], message: str) -> None:
    from gmm_vae.config import validate

    with pytest.raises(ConfigError, match=message) as err:
        validate(compose_config([*TINY, *overrides]))
    assert "\n" not in str(err.value)


def test_the_command_line_fits_a_reference(tmp_path: Path, run_cli) -> None:
    result = run_cli("train.py", [*TINY, *FIT, "model=gaussian_mixture",
                                  f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Fitted GaussianMixture(K) (39 parameters)" in result.stdout
    assert "latent: none (a reference model)" in result.stdout
    assert "modes captured 4/4" in result.stdout


def test_a_sweep_puts_the_vae_and_a_reference_side_by_side(tmp_path: Path, run_cli) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli("train.py", ["-m", *TINY, "model=vae,gaussian_mixture",
                                  f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in (sweep / "summary.md").read_text().splitlines()
            if line.startswith("| 0 |") or line.startswith("| 1 |")]
    assert rows[0].startswith("| 0 | vae | completed |")
    assert rows[1].startswith("| 1 | gaussian_mixture | completed |")
    assert "| 4/4 |" in rows[1]  # the mixture fit captures every mode where 2 epochs of VAE do not
