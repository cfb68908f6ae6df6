"""Sweeps and scale-out: multiruns and their summary, launchers, DDP and the Optuna search.

The end-to-end tests run ``train.py`` as a user would, on tiny data, with every output under
pytest's tmp dir. The summary's reading rules (broken job dirs, figure axes) are tested on
hand-made job dirs, which costs no training.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from gmm_vae.runs.summarize import (
    CSV_NAME,
    MARKDOWN_NAME,
    METRIC_PATHS,
    MODES_FIGURE,
    NLL_GAP_FIGURE,
    figure_axes,
    read_sweep,
    summarize_sweep,
)
from gmm_vae.values import lookup
from tests.conftest import CONF, ROOT, run_script

# Tiny data, no in-training analysis and no TensorBoard: the cheapest complete run. One torch
# thread: on a busy 2-core machine torch's default (one per core) spin-waits for cores and made
# the same two runs 2-6x slower.
FAST = ["debug=tiny", "analysis.every_n_epochs=0", "logger.tensorboard=false", "torch_threads=1"]
NO_EVAL = [*FAST, "analysis.evaluate_at_end=false"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def status_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "status.json").read_text())


def run_summarize(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m gmm_vae.runs.summarize args`` from ``cwd``, as a user runs it."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "gmm_vae.runs.summarize", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def compose_with_hydra(overrides: list[str]) -> DictConfig:
    """The config, ``hydra`` node included, that ``python train.py <overrides>`` composes."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


# ------------------------------------------------------------------ a 2 x 2 grid, end to end


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``python train.py -m debug=tiny model.latent_dim=1,2 trainer.max_epochs=1,2``."""
    cwd = tmp_path_factory.mktemp("grid")
    sweep_dir = cwd / "sweep"
    proc = run_script("train.py", ["-m", *FAST, "model.latent_dim=1,2", "trainer.max_epochs=1,2",
                                   f"hydra.sweep.dir={sweep_dir}"], cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep_dir, proc.stdout


def test_grid_multirun_leaves_one_completed_run_dir_per_combination(grid_sweep) -> None:
    sweep_dir, _ = grid_sweep
    expected = {"0": ("1", 1), "1": ("1", 2), "2": ("2", 1), "3": ("2", 2)}
    for job, (latent, epochs) in expected.items():
        run_dir = sweep_dir / job
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
        assert status_of(run_dir)["status"] == "completed"
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        assert f"model.latent_dim={latent}" in overrides
        cfg = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
        assert cfg["trainer"]["max_epochs"] == epochs
        assert (run_dir / "evaluation" / "metrics.json").is_file()


def test_grid_summary_has_a_row_per_job_with_overrides_and_metrics(grid_sweep) -> None:
    sweep_dir, stdout = grid_sweep
    assert f"Sweep summary: {sweep_dir / MARKDOWN_NAME}" in stdout
    rows = read_csv(sweep_dir / CSV_NAME)
    assert [r["job"] for r in rows] == ["0", "1", "2", "3"]
    assert [(r["model.latent_dim"], r["trainer.max_epochs"]) for r in rows] == [
        ("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
    assert all(r["debug"] == "tiny" for r in rows)
    assert set(METRIC_PATHS) <= set(rows[0])
    for r in rows:
        assert r["status"] == "completed" and r["error"] == ""
        assert r["n_components"] == "4"
        # Each metric column is its job's own number, read from the path METRIC_PATHS names.
        metrics = json.loads((sweep_dir / r["job"] / "evaluation" / "metrics.json").read_text())
        for column, path in METRIC_PATHS.items():
            value: Any = lookup(metrics, path)
            # An instrument turned off (debug=tiny: analysis.c2st=false) is an empty cell.
            expected = "" if value is None else str(value)
            assert r[column] == expected, (r["job"], column, r[column], value)
        assert float(r["nll_gap"]) == pytest.approx(float(r["nll_model"]) - float(r["nll_true"]),
                                                    abs=1e-9)
        assert float(r["objective"]) <= 1.0
        assert r["wall_time_s"] == str(status_of(sweep_dir / r["job"])["wall_time_s"])
    md = (sweep_dir / MARKDOWN_NAME).read_text()
    assert "4 jobs: 4 completed, 0 failed, 0 unfinished. Common settings: `debug=tiny`" in md
    header = next(line for line in md.splitlines() if line.startswith("| job |"))
    assert "| model.latent_dim | trainer.max_epochs | status | objective" in header
    table = [line for line in md.splitlines() if line.startswith("| ") and "completed" in line]
    assert [line.split(" | ")[:3] for line in table] == [
        ["| 0", "1", "1"], ["| 1", "1", "2"], ["| 2", "2", "1"], ["| 3", "2", "2"]]
    for name in (MODES_FIGURE, NLL_GAP_FIGURE):
        assert (sweep_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in md


# --------------------------------------------------------- a failing combination, and the CLI


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A sweep whose second combination is invalid (``model.latent_dim=0``)."""
    cwd = tmp_path_factory.mktemp("failing")
    sweep_dir = cwd / "sweep"
    proc = run_script("train.py", ["-m", *NO_EVAL, "model.latent_dim=2,0",
                                   f"hydra.sweep.dir={sweep_dir}"], cwd=cwd, timeout=300)
    return sweep_dir, proc


def test_a_failing_combination_is_marked_failed_and_the_sweep_goes_on(failing_sweep) -> None:
    sweep_dir, proc = failing_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert status_of(sweep_dir / "0")["status"] == "completed"
    assert (sweep_dir / "0" / "checkpoints" / "last.ckpt").is_file()
    failed = status_of(sweep_dir / "1")
    assert failed["status"] == "failed"
    assert "model.latent_dim" in failed["error"]
    rows = read_csv(sweep_dir / CSV_NAME)
    assert [(r["model.latent_dim"], r["status"]) for r in rows] == [("2", "completed"),
                                                                   ("0", "failed")]
    assert rows[1]["error"] == failed["error"]
    assert rows[0]["val_loss"] and rows[0]["modes_captured"] == ""  # no evaluation asked for
    md = (sweep_dir / MARKDOWN_NAME).read_text()
    assert "2 jobs: 1 completed, 1 failed, 0 unfinished." in md
    assert f"| **failed**: {failed['error']} |" in md
    # Nothing was evaluated, so there is nothing to plot.
    assert not (sweep_dir / MODES_FIGURE).exists()


def test_summarize_cli_rewrites_the_same_summary(failing_sweep, tmp_path: Path) -> None:
    sweep_dir, _ = failing_sweep
    before = {name: (sweep_dir / name).read_text() for name in (CSV_NAME, MARKDOWN_NAME)}
    for name in before:
        (sweep_dir / name).unlink()
    proc = run_summarize([str(sweep_dir)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    after = {name: (sweep_dir / name).read_text() for name in before}
    assert after == before
    assert proc.stdout.startswith(before[MARKDOWN_NAME])
    assert f"markdown:       {sweep_dir / MARKDOWN_NAME}" in proc.stdout


def test_summarize_cli_on_a_missing_dir_exits_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "multirun" / "nope"
    proc = run_summarize([str(missing)], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == f"error: {missing}: no such sweep directory\n"
    assert proc.stdout == ""


# ------------------------------------------------------- the summary's rules, on made-up dirs


def make_job(sweep_dir: Path, job: str, overrides: list[str], status: Any = None,
             metrics: Any = None) -> Path:
    """A job dir as a multirun leaves it; a ``str`` status/metrics is written verbatim."""
    run_dir = sweep_dir / job
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    for name, content in (("status.json", status), ("evaluation/metrics.json", metrics)):
        if content is None:
            continue
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else json.dumps(content)
        (run_dir / name).write_text(text)
    return run_dir


def fake_metrics(captured: int, gap: float) -> dict[str, Any]:
    return {"coverage": {"modes_captured": captured, "n_components": 4, "hq_fraction": 0.5,
                         "hq_ratio": 0.6, "weights_tv": 0.1, "median_fraction": 0.4},
            "nll": {"model": 5.0 + gap, "true": 5.0, "gap": gap},
            "distance": {"sliced_wasserstein": 0.3, "sliced_wasserstein_floor": 0.1},
            "clusters": {"vae_samples": {"k_data": 3, "k_latent": 2},
                         "ground_truth": {"k_data": 4, "k_latent": 4}},
            "modes": {"vae_samples": 5, "ground_truth": 6, "nd_vae_samples": 3,
                      "nd_ground_truth": 4}}


def completed(objective: float = 0.5) -> dict[str, Any]:
    return {"status": "completed", "wall_time_s": 1.5, "objective": objective,
            "final_metrics": {"val/loss": 4.2}}


def test_broken_job_dirs_are_rows_with_their_problem_never_a_crash(tmp_path: Path) -> None:
    make_job(tmp_path, "0", ["seed=1"], completed(), fake_metrics(4, 0.1))
    make_job(tmp_path, "1", ["seed=2"], "{not json")
    make_job(tmp_path, "2", ["seed=3"])  # killed before train() wrote anything
    make_job(tmp_path, "3", ["seed=4"], {"status": "running"})
    make_job(tmp_path, "4", ["seed=5"], completed(), "{truncated")
    make_job(tmp_path, "5", ["seed=6"], {"status": "failed", "error": "ConfigError: x | y"})
    broken = make_job(tmp_path, "6", [], completed())
    (broken / ".hydra" / "overrides.yaml").write_text("[unclosed")
    (tmp_path / ".submitit" / "1").mkdir(parents=True)  # launcher bookkeeping, not a job

    paths = summarize_sweep(tmp_path)
    rows = read_csv(paths["csv"])
    got = [(r["job"], r["seed"], r["status"], r["error"]) for r in rows]
    assert got == [
        ("0", "1", "completed", ""),
        ("1", "2", "unfinished", "status.json: unreadable (JSONDecodeError)"),
        ("2", "3", "unfinished", ""),
        ("3", "4", "unfinished", ""),
        ("4", "5", "completed", "evaluation/metrics.json: unreadable (JSONDecodeError)"),
        ("5", "6", "failed", "ConfigError: x | y"),
        ("6", "", "completed", "overrides.yaml: unreadable (ParserError)"),
    ]
    assert rows[0]["nll_gap"] == "0.1" and rows[0]["k_data_truth"] == "4"
    assert rows[4]["objective"] == "0.5" and rows[4]["nll_gap"] == ""
    md = paths["markdown"].read_text()
    assert "7 jobs: 3 completed, 1 failed, 3 unfinished." in md
    assert "| **failed**: ConfigError: x \\| y |" in md  # a pipe cannot break the table


def test_jobs_are_in_job_number_order(tmp_path: Path) -> None:
    for job in range(12):
        make_job(tmp_path, str(job), [f"seed={job}"], completed(), fake_metrics(3, 0.2))
    assert [r.job for r in read_sweep(tmp_path)] == [str(j) for j in range(12)]


def test_figures_plot_against_the_first_numeric_override_that_varies(tmp_path: Path) -> None:
    for job, (latent, epochs) in enumerate([(1, 50), (1, 200), (8, 50), (8, 200)]):
        make_job(tmp_path, str(job), ["data.n_components=4", "model.prior=mog",
                                      f"model.latent_dim={latent}",
                                      f"trainer.max_epochs={epochs}"],
                 completed(), fake_metrics(latent // 2, 1.0 / latent))
    # model.prior does not vary, so it is neither the x axis nor the legend.
    assert figure_axes(read_sweep(tmp_path)) == ("model.latent_dim", "trainer.max_epochs")
    paths = summarize_sweep(tmp_path)
    assert paths["modes_figure"] == tmp_path / MODES_FIGURE
    assert paths["nll_gap_figure"].stat().st_size > 1000


def test_figures_are_skipped_when_nothing_numeric_varies(tmp_path: Path) -> None:
    make_job(tmp_path, "0", ["model.prior=standard"], completed(), fake_metrics(3, 0.2))
    make_job(tmp_path, "1", ["model.prior=mog"], completed(), fake_metrics(4, 0.1))
    (tmp_path / MODES_FIGURE).write_bytes(b"stale")  # from an earlier summary of other jobs
    paths = summarize_sweep(tmp_path)
    assert set(paths) == {"csv", "markdown"}
    assert not (tmp_path / MODES_FIGURE).exists()
    assert "![" not in paths["markdown"].read_text()


def test_a_dir_without_jobs_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "not_a_job").mkdir()
    proc = run_summarize([str(tmp_path)], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: {tmp_path}: no job directories in it (none holds "
                                   ".hydra/overrides.yaml)")


def test_the_multirun_callback_summarises_once_not_in_ddp_ranks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from gmm_vae.runs.hydra_callbacks import SummarizeSweep

    make_job(tmp_path, "0", ["seed=1"], completed(), fake_metrics(4, 0.1))
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    monkeypatch.setenv("LOCAL_RANK", "1")  # a rank Lightning re-launched with the command line
    SummarizeSweep().on_multirun_end(config=config)
    assert not (tmp_path / CSV_NAME).exists()
    monkeypatch.delenv("LOCAL_RANK")
    SummarizeSweep().on_multirun_end(config=config)
    assert (tmp_path / CSV_NAME).is_file()
    assert capsys.readouterr().out == f"Sweep summary: {tmp_path / MARKDOWN_NAME}\n"


# ------------------------------------------------------------------------------- configs


def test_latent_epochs_sweep_is_the_studys_grid_and_runs_without_dash_m() -> None:
    cfg = compose_with_hydra(["sweep=latent_epochs"])
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert dict(cfg.hydra.sweeper.params) == {"model.latent_dim": "1,2,3,8",
                                              "trainer.max_epochs": "50,200,500"}
    assert cfg.data.n_samples == 10_000  # the study's data, not the debug size


def test_smoke_sweep_is_small_and_uses_debug_sized_data() -> None:
    cfg = compose_with_hydra(["sweep=smoke"])
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert dict(cfg.hydra.sweeper.params) == {"model.latent_dim": "1,2",
                                              "trainer.max_epochs": "1,2"}
    assert cfg.data.n_samples == 512 and cfg.model.hidden_dims == [32, 32]


@pytest.mark.parametrize(("launcher", "target"), [
    ("basic", "basic_launcher.BasicLauncher"),
    ("joblib", "joblib_launcher.JoblibLauncher"),
    ("local_parallel", "joblib_launcher.JoblibLauncher"),
    ("submitit_local", "submitit_launcher.LocalLauncher"),
    ("submitit_slurm", "submitit_launcher.SlurmLauncher"),
    ("slurm", "submitit_launcher.SlurmLauncher"),
])
def test_every_launcher_config_composes(launcher: str, target: str) -> None:
    """Our conf/hydra/launcher/ files sit beside the plugins' own; all stay selectable."""
    cfg = compose_with_hydra([f"hydra/launcher={launcher}"])
    assert str(cfg.hydra.launcher._target_).endswith(target)
    if launcher == "local_parallel":
        assert cfg.hydra.launcher.n_jobs == 2
    if launcher == "joblib":
        assert cfg.hydra.launcher.n_jobs == -1  # the plugin's own default, untouched


def test_slurm_launcher_settings_become_sbatch_options(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """What submitit would hand to sbatch, built exactly as Hydra's SlurmLauncher builds it."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit checks srun exists
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_PARTITION", "gpu")
    monkeypatch.delenv("SBATCH_ACCOUNT", raising=False)
    cfg = compose_with_hydra(["hydra/launcher=slurm", "hydra.launcher.mem_gb=8",
                              "hydra.launcher.timeout_min=30", f"hydra.sweep.dir={tmp_path}"])
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert isinstance(params, dict)
    assert params["partition"] == "gpu" and params["account"] is None
    executor = submitit.AutoExecutor(cluster="slurm", folder=params["submitit_folder"],
                                     slurm_max_num_timeout=params["max_num_timeout"])
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k not in {"submitit_folder", "max_num_timeout", "_target_"}})
    sbatch = executor._executor._make_submission_file_text("python train.py", "uid")
    for line in ("--partition=gpu", "--time=30", "--mem=8GB", "--cpus-per-task=4",
                 "--gpus-per-node=1", "--ntasks-per-node=1", "--nodes=1"):
        assert f"#SBATCH {line}\n" in sbatch
    assert "--account" not in sbatch


def test_fidelity_search_maximises_the_objective_with_a_seeded_tpe() -> None:
    cfg = compose_with_hydra(["hparams_search=fidelity"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert str(sweeper.direction) in ("maximize", "Direction.maximize")
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.sampler.seed is not None
    assert sweeper.n_trials == 20
    assert set(sweeper.params) == {"model.latent_dim", "model.prior", "model.prior_components",
                                   "model.lr", "model.beta"}
    assert cfg.analysis.evaluate_at_end  # the objective comes from the final evaluation


# ------------------------------------------------------------------- launchers, DDP, Optuna


def test_joblib_launcher_runs_a_sweep_and_the_summary_lands_in_its_dir(tmp_path: Path) -> None:
    # The default sweep dir (multirun/<date>/<time>) checks that the callback summarises the
    # directory the jobs were written to.
    # No torch_threads here: the joblib launcher sets each job's threads itself (pipeline).
    args = [a for a in NO_EVAL if not a.startswith("torch_threads")]
    proc = run_script("train.py", ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                                   *args, "trainer.max_epochs=1"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = tmp_path.glob("multirun/*/*/0")
    assert status_of(run_dir)["status"] == "completed"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    rows = read_csv(run_dir.parent / CSV_NAME)
    assert [(r["job"], r["status"]) for r in rows] == [("0", "completed")]


def test_submitit_local_launcher_runs_a_sweep(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    proc = run_script("train.py", ["-m", "hydra/launcher=submitit_local", *NO_EVAL,
                                   "trainer.max_epochs=1", f"hydra.sweep.dir={sweep_dir}"],
                      cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert status_of(sweep_dir / "0")["status"] == "completed"
    assert (sweep_dir / "0" / "checkpoints" / "last.ckpt").is_file()
    assert list((sweep_dir / ".submitit").iterdir())  # submitit's own logs, not a job row
    assert [r["job"] for r in read_csv(sweep_dir / CSV_NAME)] == ["0"]


def test_ddp_on_two_cpu_processes_matches_a_single_device_run(tmp_path: Path) -> None:
    """Lightning re-launches train.py for rank 1 (into the same Hydra run dir); one status.json
    and one set of checkpoints come out, and the loss is close to a one-process run's.

    Each of the two ranks takes half the batches of 64 and their gradients are averaged: the
    one-process run it is compared with takes the same steps on batches of 128."""
    runs = {}
    for name, extra in (("ddp", ["trainer.devices=2", "trainer.strategy=ddp"]),
                        ("single", ["trainer.devices=1", "data.batch_size=128"])):
        run_dir = tmp_path / name
        proc = run_script("train.py", [*NO_EVAL, "trainer.accelerator=cpu", *extra,
                                       f"hydra.run.dir={run_dir}"], cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = status_of(run_dir)
    ddp_dir = tmp_path / "ddp"
    assert runs["ddp"]["status"] == "completed"
    assert sorted(p.name for p in tmp_path.rglob("status.json")) == ["status.json"] * 2
    assert (ddp_dir / "checkpoints" / "last.ckpt").is_file()
    assert (ddp_dir / "train_ddp_process_1.log").is_file()  # rank 1 ran, in the same dir
    assert not (tmp_path / "outputs").exists()  # and made no run dir of its own
    ddp_loss = runs["ddp"]["final_metrics"]["val/loss"]
    single_loss = runs["single"]["final_metrics"]["val/loss"]
    # Each rank sees half the batches, so the trajectories differ; the loss must not.
    assert ddp_loss == pytest.approx(single_loss, rel=0.05)


def test_optuna_search_runs_trials_and_writes_its_results(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "search"
    proc = run_script("train.py", ["-m", "hparams_search=fidelity", *FAST,
                                   "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep_dir}"],
                      cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna"
    assert set(results["best_params"]) == {"model.latent_dim", "model.prior",
                                           "model.prior_components", "model.lr", "model.beta"}
    rows = read_csv(sweep_dir / CSV_NAME)
    assert [r["status"] for r in rows] == ["completed", "completed"]
    # The value Optuna maximised is what each run reported as its objective.
    assert results["best_value"] == pytest.approx(max(float(r["objective"]) for r in rows))
    assert "Optuna's best trial: objective" in (sweep_dir / MARKDOWN_NAME).read_text()


def test_jobs_differing_only_in_seeds_are_aggregated_with_their_worst_seed(
        tmp_path: Path) -> None:
    job = 0
    for lr, gaps in (("0.002", [0.01, 0.02, 0.03]), ("0.01", [0.5, 0.4, 0.9])):
        for seed, gap in enumerate(gaps):
            captured = 4 if (lr, seed) != ("0.002", 2) else 3
            metrics = fake_metrics(captured, gap)
            metrics["latent"] = {"active_units": 2, "kl": 1.0, "collapsed": lr == "0.01"}
            make_job(tmp_path, str(job), [f"seed={seed}", f"model.lr={lr}"], completed(),
                     metrics)
            job += 1
    paths = summarize_sweep(tmp_path)
    md = paths["markdown"].read_text()
    assert "## Seeds aggregated" in md
    assert "| `model.lr=0.002` | 3 | all modes on 2 of 3 seeds | 0.1000 ± 0.0000 (worst " \
           "0.1000) | 0.020 ± 0.010 (worst 0.030) |" in md
    assert "| `model.lr=0.01` | 3 | all modes on 3 of 3 seeds |" in md
    assert md.count("**collapsed** (2)") == 3  # the three lr=0.01 rows
    rows = read_csv(paths["seeds_csv"])
    assert [(r["model.lr"], r["n_jobs"], r["all_modes_captured"], r["collapsed"])
            for r in rows] == [("0.002", "3", "2", "0"), ("0.01", "3", "3", "3")]
    assert float(rows[1]["nll_gap_worst"]) == 0.9
    assert float(rows[1]["nll_gap_mean"]) == pytest.approx(0.6)


def test_no_seed_table_when_every_setting_ran_once(tmp_path: Path) -> None:
    for job, lr in enumerate(("0.002", "0.01")):
        make_job(tmp_path, str(job), [f"model.lr={lr}"], completed(), fake_metrics(4, 0.1))
    paths = summarize_sweep(tmp_path)
    assert "seeds_csv" not in paths
    assert "Seeds aggregated" not in paths["markdown"].read_text()
