"""Judging samples from anywhere: ``python evaluate.py samples=<file> truth=<mixture>`` and
``gmm_vae.judge`` score an (N, D) array with the instruments that need no model, write the
evaluation files, say what they skipped, and refuse bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import gmm_vae
from gmm_vae.analysis.judge import JUDGE_FIGURES, SKIPPED, default_out_dir
from gmm_vae.analysis.registry import documented
from gmm_vae.data.gmm import GMM
from gmm_vae.errors import ConfigError
from tests.conftest import leaves

TRUTH = GMM(np.array([[0.0, 0.0], [6.0, 0.0]]), np.tile(np.eye(2) * 0.25, (2, 1, 1)),
            np.array([0.5, 0.5]))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A samples file drawn from the truth (a perfect sampler) and the truth's spec file."""
    root = tmp_path_factory.mktemp("judge")
    TRUTH.to_yaml(root / "gmm.yaml")
    np.save(root / "points.npy", TRUTH.sample(1000, np.random.default_rng(7))[0])
    return root / "points.npy", root / "gmm.yaml"


def test_evaluate_py_judges_a_samples_file_from_a_fresh_shell(files, tmp_path: Path,
                                                              run_cli) -> None:
    points, spec = files
    out = tmp_path / "verdict"
    proc = run_cli("evaluate.py", [f"samples={points}", f"truth={spec}", f"out={out}"],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["source"] == str(points) and metrics["truth"] == str(spec)
    assert metrics["n_samples"] == 1000 and metrics["coverage"]["n_samples"] == 1000
    assert metrics["coverage"]["modes_captured"] == 2
    assert metrics["c2st"]["accuracy"] == pytest.approx(0.5, abs=0.05)
    assert metrics["c2st"]["floor"] == pytest.approx(0.5, abs=0.05)
    assert "nll" not in metrics and "latent" not in metrics
    assert "k_latent" not in metrics["clusters"]["vae_samples"]
    assert set(metrics["skipped"]) == set(SKIPPED)
    assert np.load(out / "samples.npy").shape == (1000, 2)
    for name in JUDGE_FIGURES.values():
        assert (out / name).read_bytes().startswith(b"\x89PNG"), name
    assert not (out / "tsne_latent.png").exists()
    report = (out / "report.md").read_text()
    assert "| C2ST accuracy | " in report and "| modes captured | 2 / 2 |" in report
    assert "held-out NLL" not in report.split("## Trusted measures")[1]
    assert "skipped (no model): held-out NLL, latent diagnostics" in proc.stdout
    assert "C2ST accuracy" in proc.stdout and str(out / "report.md") in proc.stdout
    assert list(tmp_path.iterdir()) == [out], "evaluate.py left files in the working directory"


def test_a_bad_samples_file_is_one_line_and_exit_2(files, tmp_path: Path, run_cli) -> None:
    _, spec = files
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros(3000))
    proc = run_cli("evaluate.py", [f"samples={flat}", f"truth={spec}"], cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        "error: samples: expected an (N, D) array, got shape (3000,); one row per sample, "
        "D = 2 columns (x.reshape(-1, 2) if flattened)")
    assert not default_out_dir(flat).exists()


def test_gmm_vae_judge_scores_an_array_and_sees_a_missing_mode() -> None:
    half = TRUTH.sample(4000, np.random.default_rng(1))[0]
    half = half[half[:, 0] < 3]  # component 1 dropped
    metrics = gmm_vae.judge(half, TRUTH, c2st=False)
    assert metrics["coverage"]["modes_captured"] == 1
    assert metrics["coverage"]["weights_tv"] > 0.4
    assert metrics["source"] == "samples (in memory)" and "c2st" not in metrics
    undocumented = [k for k in leaves(metrics) if not documented(k)]
    assert not undocumented, undocumented


@pytest.mark.parametrize(("samples", "message"), [
    (np.zeros((500, 3)), r"^samples: 3 columns, but the mixture is 2-D$"),
    (np.vstack([np.zeros((498, 2)), [[np.nan, 0.0], [np.inf, 1.0]]]),
     r"^samples: 2 of 500 rows are not finite \(NaN or inf\); drop them first$"),
    (np.zeros((150, 2)), r"^samples: 150 rows, at least 200 needed \(C2ST needs that many; "
                         r"c2st=false skips it\)$"),
    (np.zeros((2, 3, 4)), r"^samples: expected an \(N, D\) array, got shape \(2, 3, 4\)$"),
    ("/nonexistent/points.npy", r"^samples=/nonexistent/points.npy: no such file$"),
])
def test_bad_input_is_refused_in_one_line(samples, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        gmm_vae.judge(samples, TRUTH)


def test_the_truth_is_a_spec_file_or_a_run_directory(files, tmp_path: Path) -> None:
    from gmm_vae.analysis.judge import load_truth

    _, spec = files
    assert np.allclose(load_truth(spec.parent).means, TRUTH.means)  # a dir with gmm.yaml
    with pytest.raises(ConfigError, match=r"^truth=.*: no such mixture file or run directory$"):
        load_truth(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"^truth=.*: a directory without gmm\.yaml"):
        load_truth(tmp_path)
    (tmp_path / "bad.yaml").write_text("means: [[0, 0]\n")
    with pytest.raises(ConfigError, match=r"^truth: .*bad\.yaml' is not valid YAML"):
        load_truth(tmp_path / "bad.yaml")
