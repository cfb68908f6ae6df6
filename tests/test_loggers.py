"""The experiment loggers: CSV and MLflow beside TensorBoard, alone or together, on tiny runs.

Each test reads what a user would: ``metrics.csv`` with the csv module, the MLflow store with
MLflow's own client, the event files with TensorBoard's reader.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gmm_vae.errors import ConfigError
from gmm_vae.runs import loggers, rundir
from gmm_vae.runs.pipeline import train
from tests.conftest import ROOT, compose_config

# Tiny data, no in-training analysis, one thread: the cheapest run that still logs every tag.
FAST = ["debug=tiny", "analysis.every_n_epochs=0", "torch_threads=1",
        "trainer.log_every_n_steps=1"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_each_logger_file_turns_on_its_own_logger_and_a_list_combines_them() -> None:
    def flags(*overrides: str) -> tuple[bool, bool, bool]:
        node = compose_config(list(overrides)).logger
        return bool(node.tensorboard), bool(node.csv), bool(node.mlflow)

    assert flags() == (True, False, False)  # the default: TensorBoard
    assert flags("logger=csv") == (False, True, False)
    assert flags("logger=mlflow") == (False, False, True)
    assert flags("logger=none") == (False, False, False)
    assert flags("logger=[tensorboard,csv]") == (True, True, False)
    assert flags("logger=[tensorboard,csv,mlflow]") == (True, True, True)
    assert flags("logger.csv=true") == (True, True, False)  # one added to the default


def test_csv_logger_writes_train_and_val_rows_to_metrics_csv(tmp_path: Path) -> None:
    train(compose_config([*FAST, "logger=csv", "analysis.evaluate_at_end=false"]), tmp_path)
    rows = read_csv(tmp_path / "metrics.csv")
    columns = set(rows[0])
    for split in ("train", "val"):
        for term in ("loss", "recon", "kl"):
            assert f"{split}/{term}" in columns, (split, term, sorted(columns))
    # debug=tiny: 2 epochs of 8 steps; a row per step, per epoch's train and val means.
    assert len([r for r in rows if r["train/loss_step"]]) == 16
    assert [r["epoch"] for r in rows if r["val/loss"]] == ["0", "1"]
    assert [r["epoch"] for r in rows if r["train/loss"]] == ["0", "1"]
    assert all(float(r["val/loss"]) > 0 for r in rows if r["val/loss"])
    assert not list(tmp_path.glob("events.out.tfevents.*"))  # TensorBoard was not asked for
    assert "latent_dim: 3" in (tmp_path / "hparams.yaml").read_text()


def test_mlflow_with_tensorboard_writes_both_and_mlflow_keeps_metrics_params_figures(
        tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_config([*FAST, "logger=[tensorboard,mlflow]", "analysis.tsne_every_n_epochs=2",
                          "analysis.tsne_points=60"])
    train(cfg, tmp_path)
    tags = set(EventAccumulator(str(tmp_path)).Reload().Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/nelbo"} <= tags

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # reading the store, as the run did
    client = MlflowClient(f"file:{tmp_path / 'mlruns'}")
    (run,) = client.search_runs([client.get_experiment_by_name("gmm-vae").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["run_dir"] == str(tmp_path.resolve())
    assert {"train/loss", "val/loss", "val/nelbo", "train/loss_step"} <= set(run.data.metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")] == [7, 15]
    assert tags >= set(run.data.metrics) - {"epoch"} - {t for t in run.data.metrics
                                                        if t.startswith("hp/")}
    assert run.data.metrics["hp/modes_captured"] >= 0
    assert run.data.params["config.seed"] == "42"
    assert run.data.params["config.trainer.max_epochs"] == "2"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"evaluation", "tsne"}
    evaluation = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/metrics.json", "evaluation/report.md",
            "evaluation/pairwise.png"} <= evaluation
    latent = [a.path for a in client.list_artifacts(run.info.run_id, "tsne/latent")]
    assert latent == ["tsne/latent/step_000016.png"]


def test_mlflow_tracking_uri_is_overridable_and_a_path_means_a_file_store(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert loggers.mlflow_uri(compose_config(["logger=mlflow"]), run_dir) == \
        f"file:{run_dir.resolve() / 'mlruns'}"
    shared = compose_config(["logger=mlflow", f"logger.mlflow_tracking_uri={tmp_path}/store"])
    assert loggers.mlflow_uri(shared, run_dir) == f"file:{tmp_path.resolve()}/store"
    server = compose_config(["logger=mlflow", "logger.mlflow_tracking_uri=http://host:5000"])
    assert loggers.mlflow_uri(server, run_dir) == "http://host:5000"


def test_a_resumed_run_continues_metrics_csv_instead_of_deleting_it(tmp_path: Path) -> None:
    """Lightning's writer deletes an existing metrics.csv; the run's keeps its rows and adds a
    column a later segment brings (pins ``loggers._run_csv_logger`` against Lightning)."""
    first = loggers._run_csv_logger(tmp_path)
    first.log_metrics({"train/loss": 2.0}, step=0)
    first.finalize("success")
    second = loggers._run_csv_logger(tmp_path)
    second.log_metrics({"train/loss": 1.5}, step=1)
    second.log_metrics({"val/loss": 1.25}, step=1)
    second.finalize("success")
    rows = read_csv(tmp_path / "metrics.csv")
    assert [(r["step"], r["train/loss"], r["val/loss"]) for r in rows] == [
        ("0", "2.0", ""), ("1", "1.5", ""), ("1", "", "1.25")]


def test_overwrite_removes_the_csv_and_mlflow_logs_of_the_old_run(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("step\n0\n")
    (tmp_path / "mlruns" / "0").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("mine")
    assert rundir.previous_status(tmp_path) == "unknown"  # a logger's file marks a used dir
    rundir.clear(tmp_path, records=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_missing_mlflow_package_is_one_line_naming_the_install_command(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what find_spec sees when it is absent
    with pytest.raises(ConfigError) as err:
        train(compose_config([*FAST, "logger=mlflow"]), tmp_path / "run")
    assert str(err.value) == ('logger.mlflow=true needs the mlflow package, which is not '
                              'installed: pip install -e ".[mlflow]" (or pip install '
                              'mlflow-skinny)')
    assert not (tmp_path / "run").exists()


def test_train_py_without_mlflow_exits_2_with_the_line_and_leaves_no_run_dir(
        tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code = ("import runpy, sys; sys.modules['mlflow'] = None; "
            f"sys.argv = ['train.py', 'debug=tiny', 'logger=mlflow', 'hydra.run.dir={run_dir}']; "
            f"runpy.run_path({str(ROOT / 'train.py')!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == ('error: logger.mlflow=true needs the mlflow package, which '
                                   'is not installed: pip install -e ".[mlflow]" (or pip install '
                                   'mlflow-skinny)')
    assert not run_dir.exists()
