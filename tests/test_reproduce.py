"""``rerun=<run dir>``: a copy of a run trained from its directory alone, and the verdict on
whether its numbers reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gmm_vae import api
from gmm_vae.runs.reproduce import compare
from gmm_vae.runs.rerun import load_run_config
from tests.conftest import run_script

# No in-training analysis nor final evaluation, one thread: the cheapest complete run.
FAST = ["debug=tiny", "analysis.every_n_epochs=0", "analysis.evaluate_at_end=false",
        "logger=none", "torch_threads=1"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run with a seed and a data seed of its own."""
    run_dir = tmp_path_factory.mktemp("source") / "run"
    api.train([*FAST, "seed=3", "data.seed=5"], run_dir=run_dir)
    return run_dir


def test_rerun_trains_a_copy_in_a_new_dir_and_says_it_reproduces(source: Path,
                                                                  tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    proc = run_script("train.py", [f"rerun={source}", f"hydra.run.dir={copy}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = json.loads((copy / "status.json").read_text())
    assert status["status"] == "completed"
    verdict = status["rerun_of"]
    assert verdict["run_dir"] == str(source) and verdict["reproduced"] and verdict["exact"]
    assert f"Re-run of {source}: reproduces exactly ({verdict['compared']} numbers)" \
        in proc.stdout
    assert verdict["compared"] >= 6  # train and val loss, recon, kl at least
    original = json.loads((source / "status.json").read_text())["final_metrics"]
    assert status["final_metrics"] == original
    # The copy's record is the config it trained with, so it is a run like any other.
    saved = yaml.safe_load((copy / ".hydra" / "config.yaml").read_text())
    assert (saved["seed"], saved["data"]["seed"], saved["rerun"]) == (3, 5, None)
    assert load_run_config(copy).trainer.max_epochs == 2
    assert (copy / "gmm.yaml").read_text() == (source / "gmm.yaml").read_text()


def test_a_rerun_with_another_seed_names_the_numbers_that_differ(source: Path,
                                                                 tmp_path: Path) -> None:
    run = api.train([f"rerun={source}", "seed=4"], run_dir=tmp_path / "copy")
    verdict = run.status["rerun_of"]
    assert not verdict["reproduced"]
    assert any(d.startswith("val/loss: ") for d in verdict["differences"])
    assert run.status["final_metrics"]["val/loss"] != json.loads(
        (source / "status.json").read_text())["final_metrics"]["val/loss"]


def test_rerun_of_a_dir_that_is_no_run_is_one_line_and_leaves_no_run_dir(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    proc = run_script("train.py", [f"rerun={tmp_path / 'nope'}", f"hydra.run.dir={copy}"],
                      cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: rerun={tmp_path / 'nope'} does not exist"
    assert not copy.exists()


def test_rerun_and_resume_together_are_refused() -> None:
    with pytest.raises(api.ConfigError, match="cannot be combined"):
        api.compose(["rerun=/a", "resume=/b"])


def _run(path: Path, final: dict, objective: float | None, metrics: dict | None) -> Path:
    path.mkdir(parents=True)
    (path / "status.json").write_text(json.dumps(
        {"status": "completed", "final_metrics": final, "objective": objective}))
    if metrics is not None:
        (path / "evaluation").mkdir()
        (path / "evaluation" / "metrics.json").write_text(json.dumps(metrics))
    return path


def test_compare_counts_equal_numbers_and_lists_each_difference(tmp_path: Path) -> None:
    metrics = {"coverage": {"modes_captured": 4, "weights_tv": 0.0071}, "nll": {"gap": None}}
    a = _run(tmp_path / "a", {"val/loss": 0.5, "train/loss": 0.25}, 0.9, metrics)
    same = _run(tmp_path / "b", {"val/loss": 0.5, "train/loss": 0.25}, 0.9, metrics)
    result = compare(a, same)
    assert result.reproduced and result.exact and result.compared == 5  # gap: null on both
    other = _run(tmp_path / "c", {"val/loss": 0.5 * (1 + 1e-9), "train/loss": 0.3}, 0.9,
                 {"coverage": {"modes_captured": 3, "weights_tv": 0.0071}})
    result = compare(a, other)
    assert not result.reproduced
    assert result.differences == ["modes_captured: 4 -> 3", "train/loss: 0.25 -> 0.3"]
    assert "val/loss" not in " ".join(result.differences)  # within the relative 1e-6
    unfinished = _run(tmp_path / "d", {}, None, None)
    assert compare(unfinished, a).lines()[0].endswith("nothing to compare (the original has "
                                                      "no final metrics: was it completed?)")


def test_a_rerun_takes_the_thread_count_the_source_ran_with(tmp_path: Path) -> None:
    """Threads reorder float sums (a 300-epoch run's last digit moves): a run records its
    count, and a re-run whose source left ``torch_threads`` unset takes that count."""
    from gmm_vae.runs.reproduce import rerun_config
    from tests.conftest import compose_config

    source = tmp_path / "source"
    api.train(["debug=tiny", "analysis.every_n_epochs=0", "analysis.evaluate_at_end=false",
               "logger=none"], run_dir=source)
    import torch

    status = json.loads((source / "status.json").read_text())
    assert status["torch_threads"] == torch.get_num_threads()
    (source / "status.json").write_text(json.dumps({**status, "torch_threads": 3}))
    cfg, _ = rerun_config(compose_config([f"rerun={source}"]), ["rerun"])
    assert cfg.torch_threads == 3
    # A count given on the command line wins.
    cfg, _ = rerun_config(compose_config([f"rerun={source}", "torch_threads=1"]),
                          ["rerun", "torch_threads"])
    assert cfg.torch_threads == 1
