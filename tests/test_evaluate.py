"""evaluate.py and the analysis callbacks: files with their content, errors with their wording."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from gmm_vae.analysis.callbacks import (
    ANALYSIS_SCALARS,
    AnalysisCallback,
    TSNECallback,
    build_analysis_callbacks,
    is_due,
)
from gmm_vae.analysis.report import FIGURES, json_safe
from gmm_vae.errors import ConfigError
from gmm_vae.runs.pipeline import train
from gmm_vae.runs.rerun import evaluate_run
from tests.conftest import TINY, compose_config

QUIET = ["analysis.evaluate_at_end=false", "analysis.every_n_epochs=0",
         "analysis.tsne_every_n_epochs=0"]
METRIC_KEYS = {
    "clusters": {"criterion", "k_max", "vae_samples", "ground_truth"},
    "modes": {"vae_samples", "ground_truth", "vae_samples_per_axis", "ground_truth_per_axis",
              "nd_vae_samples", "nd_ground_truth"},
    "coverage": {"modes_captured", "n_components", "min_capture", "hq_radius", "hq_fraction",
                 "hq_perfect",
                 "hq_ratio", "weights_tv", "weights_tv_hq", "median_fraction", "shares",
                 "off_mode_share", "reference_shares", "capture_ratio", "captured",
                 "n_samples"},
    "coverage_truth": {"modes_captured", "hq_fraction", "weights_tv", "weights_tv_hq",
                       "median_fraction", "n_samples"},
    "latent": {"active_units", "latent_dim", "kl", "kl_per_dim", "mean_variance", "collapsed",
               "verdict"},
    "nll": {"model", "true", "gap", "iwae_samples", "n_points"},
    "distance": {"sliced_wasserstein", "sliced_wasserstein_floor"},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny training run (2 epochs, checkpoints, no analysis)."""
    path = tmp_path_factory.mktemp("trained") / "run"
    cfg = compose_config([*TINY, *QUIET])
    train(cfg, path)
    # What Hydra writes for ``python train.py``: evaluate.py reads the run's config from it.
    (path / ".hydra").mkdir()
    OmegaConf.save(cfg, path / ".hydra" / "config.yaml")
    assert (path / "checkpoints" / "last.ckpt").is_file()
    return path


def _single_error_line(proc) -> str:  # type: ignore[no-untyped-def]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# -------------------------------------------------------------------------- evaluate.py


def test_evaluate_py_writes_metrics_samples_figures_and_report(run_dir: Path, tmp_path: Path,
                                                               run_cli) -> None:
    proc = run_cli("evaluate.py", [f"run_dir={run_dir}", "n_samples=500"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = run_dir / "evaluation"

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoint"] == "last"
    assert metrics["seed"] == 42  # the run's seed, as its end-of-training evaluation
    assert metrics["n_samples"] == 500
    for group, keys in METRIC_KEYS.items():
        assert keys <= set(metrics[group]), (group, set(metrics[group]))
    for who in ("vae_samples", "ground_truth"):
        assert {"k_data", "k_latent", "ari_data", "ari_latent"} <= set(metrics["clusters"][who])
    assert metrics["coverage"]["n_components"] == 4
    cov = metrics["coverage"]
    # The count is the components whose share reaches min_capture of a perfect sampler's.
    assert cov["captured"] == [r >= cov["min_capture"] for r in cov["capture_ratio"]]
    assert cov["modes_captured"] == sum(cov["captured"])
    assert np.isfinite(metrics["nll"]["gap"])
    # Coverage (and its perfect-sampler reference) rests on analysis.coverage_samples (2000 in
    # debug=tiny), more than the 500 samples the rest of the evaluation draws.
    assert metrics["coverage"]["n_samples"] == 2000
    assert metrics["coverage_truth"]["n_samples"] == 2000

    samples = np.load(out / "samples.npy")
    assert samples.shape == (500, 3)
    assert samples.dtype == np.float64
    assert np.isfinite(samples).all()

    for name in FIGURES.values():
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000, name
    assert not list(out.glob(".*.tmp")), "a temporary file was left behind"

    report = (out / "report.md").read_text()
    # The study's instruments and the trusted measures, by their registry names.
    for phrase in ("| cluster count k |", "| cluster count k of the latent codes |",
                   "histogram modes", "modes captured", "weight error", "high-quality share",
                   "median-ellipsoid fraction", "weight error among HQ samples",
                   "active latent units", "held-out NLL", "NLL gap", "sliced Wasserstein",
                   "N-D mode count", "perfect share", "off-mode"):
        assert phrase in report, phrase
    for name in FIGURES.values():
        assert f"]({name})" in report, name
    assert f"{metrics['coverage']['modes_captured']} / 4" in report

    assert "modes captured" in proc.stdout
    assert str(out / "report.md") in proc.stdout
    assert list(tmp_path.iterdir()) == [], "evaluate.py left files in the working directory"


def test_evaluate_run_with_defaults_reproduces_the_end_of_training_evaluation(
        tmp_path: Path) -> None:
    # On the CPU: a GPU would draw the samples from its own RNG, unlike evaluate.py.
    cfg = compose_config([*TINY, "analysis.every_n_epochs=0", "analysis.tsne_every_n_epochs=0",
                          "analysis.evaluate_at_end=true", "trainer.accelerator=cpu"])
    train(cfg, tmp_path)
    (tmp_path / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    at_end = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    again = evaluate_run(tmp_path)

    def numbers(m: dict) -> dict:
        return {k: v for k, v in m.items() if k not in ("checkpoint", "timings_s")}

    assert again["checkpoint"] == "last"
    assert numbers(again) == numbers(at_end)


def _copy_run_without_checkpoints(run_dir: Path, dest: Path) -> Path:
    dest.mkdir()
    shutil.copytree(run_dir / ".hydra", dest / ".hydra")
    shutil.copy(run_dir / "gmm.yaml", dest / "gmm.yaml")
    return dest


@pytest.mark.parametrize("case", ["missing_dir", "no_checkpoint", "truncated", "bogus"])
def test_evaluate_py_user_mistakes_are_one_line_errors(case: str, run_dir: Path,
                                                       tmp_path: Path, run_cli) -> None:
    if case == "missing_dir":
        missing = tmp_path / "nope"
        args, expected = [f"run_dir={missing}"], f"run_dir={missing} does not exist"
    elif case == "no_checkpoint":
        bare = _copy_run_without_checkpoints(run_dir, tmp_path / "bare")
        args = [f"run_dir={bare}"]
        expected = f"ckpt=last: {bare / 'checkpoints' / 'last.ckpt'} not found; the run saved"
    elif case == "truncated":
        data = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
        broken = tmp_path / "broken.ckpt"
        broken.write_bytes(data[: len(data) // 2])
        args = [f"run_dir={run_dir}", f"ckpt={broken}"]
        expected = f"ckpt={broken}: {broken} cannot be read (corrupt or truncated checkpoint)"
    else:
        args = [f"run_dir={run_dir}", "ckpt=bogus"]
        expected = "ckpt must be last, best or the path of a .ckpt file (got 'bogus')"
    line = _single_error_line(run_cli("evaluate.py", args, cwd=tmp_path))
    assert line.startswith(f"error: {expected}"), line


def test_evaluate_run_rejects_a_checkpoint_of_another_model(run_dir: Path,
                                                            tmp_path: Path) -> None:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu",
                      weights_only=True)
    state = ckpt["state_dict"]
    state["vae.encoder.0.weight"] = torch.zeros(64, 3)
    del state["vae.decoder.0.bias"]
    other = tmp_path / "other.ckpt"
    torch.save(ckpt, other)
    with pytest.raises(ConfigError, match=r"^ckpt=.*other\.ckpt: does not match the run's "
                       r"config \(missing vae\.decoder\.0\.bias; shape .* vae\.encoder\.0\.weight "
                       r"\[64, 3\] vs \[32, 3\]\)$"):
        evaluate_run(run_dir, str(other), 100)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n_samples": 0}, "n_samples must be a positive integer (got 0)"),
    ({"run_dir": None}, "run_dir is required"),
    ({"ckpt": "no/such/file.ckpt"}, "ckpt=no/such/file.ckpt: no such checkpoint file"),
])
def test_evaluate_run_names_the_bad_setting(run_dir: Path, kwargs: dict, message: str) -> None:
    args = {"run_dir": run_dir, "ckpt": "last", "n_samples": 100, **kwargs}
    with pytest.raises(ConfigError) as info:
        evaluate_run(**args)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_evaluate_run_rejects_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not a train\.py run directory"):
        evaluate_run(tmp_path, "last", 100)


def test_json_safe_turns_nan_into_null_and_numpy_into_plain_types() -> None:
    out = json_safe({"a": float("nan"), "b": np.float32(1.5), "c": [np.int64(2), np.bool_(1)],
                     "d": np.array([1.0, np.inf])})
    assert out == {"a": None, "b": 1.5, "c": [2, True], "d": [1.0, None]}
    json.dumps(out, allow_nan=False)


# ----------------------------------------------------------------- analysis callbacks


@pytest.fixture(scope="module")
def analysis_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same tiny training twice: with metrics and t-SNE every epoch, and without."""
    base = tmp_path_factory.mktemp("analysis")
    common = [*TINY, "logger.tensorboard=true", "analysis.evaluate_at_end=false", "seed=7"]
    on, off = base / "on", base / "off"
    train(compose_config([*common, "analysis.every_n_epochs=1",
                          "analysis.tsne_every_n_epochs=1"]), on)
    train(compose_config([*common, "analysis.every_n_epochs=0",
                          "analysis.tsne_every_n_epochs=0"]), off)
    return on, off


def test_analysis_callback_appends_one_line_per_epoch_to_analysis_jsonl(analysis_runs) -> None:
    on, off = analysis_runs
    lines = [json.loads(line) for line in (on / "analysis.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert lines[0]["step"] < lines[1]["step"]
    for line in lines:
        assert set(ANALYSIS_SCALARS) <= set(line)
        # The scalars are the analysis' own coverage numbers, not a copy that drifted.
        assert line["analysis/hq_fraction"] == line["metrics"]["coverage"]["hq_fraction"]
        assert line["metrics"]["coverage"]["modes_captured"] == line["analysis/modes_captured"]
        assert line["metrics"]["n_samples"] == 300  # analysis.n_samples of debug=tiny
        # The callbacks keep coverage on their own small sample (cheap, every few epochs).
        assert line["metrics"]["coverage"]["n_samples"] == 300
    assert not (off / "analysis.jsonl").exists()


def test_analysis_scalars_and_tsne_figures_reach_tensorboard_and_png(analysis_runs) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    on, _ = analysis_runs
    acc = EventAccumulator(str(on), size_guidance={"images": 0}).Reload()
    scalars = set(acc.Tags()["scalars"])
    assert set(ANALYSIS_SCALARS) <= scalars, scalars
    assert [e.step for e in acc.Scalars("analysis/modes_captured")] == [8, 16]
    assert {"tsne/latent", "tsne/samples"} <= set(acc.Tags()["images"])
    for epoch in (1, 2):
        for name in ("latent", "samples"):
            png = on / "figures" / f"epoch_{epoch:04d}_tsne_{name}.png"
            assert png.read_bytes().startswith(b"\x89PNG"), png


def test_analysis_leaves_the_trained_weights_unchanged(analysis_runs) -> None:
    on, off = analysis_runs

    def weights(run: Path) -> dict[str, torch.Tensor]:
        return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu",
                          weights_only=True)["state_dict"]

    a, b = weights(on), weights(off)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_build_analysis_callbacks_follows_the_cadences() -> None:
    cfg = compose_config([*TINY, "analysis.every_n_epochs=5", "analysis.tsne_every_n_epochs=0"])
    callbacks = build_analysis_callbacks(cfg, Path("unused"))
    assert [type(c) for c in callbacks] == [AnalysisCallback]
    assert callbacks[0].settings.nll_points == 1000
    cfg = compose_config([*TINY, "analysis.every_n_epochs=0", "analysis.tsne_every_n_epochs=3"])
    assert [type(c) for c in build_analysis_callbacks(cfg, Path("unused"))] == [TSNECallback]


def test_analysis_runs_every_n_epochs_and_at_the_last_one() -> None:
    def due(every: int, include_last: bool) -> list[int]:
        return [e + 1 for e in range(60) if is_due(
            SimpleNamespace(current_epoch=e, max_epochs=60, should_stop=False), every,
            include_last)]  # type: ignore[arg-type]

    assert due(25, include_last=True) == [25, 50, 60]
    assert due(25, include_last=False) == [25, 50]
    assert due(0, include_last=True) == []
