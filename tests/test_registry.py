"""The metric registry (STYLE: "One registry for anything listed in several places"): every key
of an evaluation is documented once, the README's glossary is the registry's, and the summary,
the report, the callbacks, the hyper-parameter metrics and the benchmark read it."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gmm_vae.analysis import registry
from gmm_vae.analysis.glossary import glossary_markdown
from gmm_vae.analysis.registry import (
    ANALYSIS,
    BENCH,
    BY_NAME,
    CLOSER,
    CSV,
    DETAILS,
    HEADLINE,
    HPARAMS,
    METRICS,
    METRICS_FILE,
    REPORT,
    STUDY,
    Metric,
    documented,
    shown,
)
from gmm_vae.values import md_cell
from tests.conftest import ROOT, TINY, compose_config, leaves


@pytest.fixture(scope="module")
def metrics() -> dict[str, Any]:
    """What ``evaluation/metrics.json`` holds, for an untrained VAE on debug=tiny data."""
    from gmm_vae.analysis.evaluation import coverage_reference, evaluate_model, settings_from_cfg
    from gmm_vae.analysis.report import json_safe
    from gmm_vae.runs.pipeline import build_datamodule, build_model

    cfg = compose_config(TINY)
    dm = build_datamodule(cfg)
    vae = build_model(cfg, dm).vae
    # C2ST on (debug=tiny turns it off): its keys are registered metrics too.
    settings = settings_from_cfg(cfg.analysis, 300, coverage_samples=None, c2st=True)
    # A small perfect-sampler reference: the keys are what matter here, not their precision.
    cache = {"coverage_reference": coverage_reference(dm.gmm, settings.hq_threshold, 0, n=5000,
                                                      quantile=settings.hq_quantile)}
    ev = evaluate_model(vae, dm.gmm, dm.x_test, settings, seed=0, cache=cache)
    return json_safe({"checkpoint": "final", "seed": 0, **ev.metrics})


# ------------------------------------------------------------------------- the table


def test_no_name_or_key_is_registered_twice() -> None:
    assert registry.index(METRICS) == BY_NAME
    assert len(BY_NAME) == len(METRICS)
    assert len({m.key for m in METRICS}) == len(METRICS)
    assert not {m.key for m in METRICS} & set(DETAILS), "a key is both a metric and a detail"


def test_a_name_or_key_registered_twice_or_an_unknown_reference_is_refused() -> None:
    with pytest.raises(ValueError, match="metric name 'weights_tv' is registered twice"):
        registry.index([*METRICS, Metric("weights_tv", "coverage.other", "again", "a copy")])
    with pytest.raises(ValueError, match=r"key 'nll\.gap' is registered twice"):
        registry.index([*METRICS, Metric("gap_again", "nll.gap", "again", "a copy")])
    with pytest.raises(ValueError, match="refers to 'nowhere'"):
        registry.index([*METRICS, Metric("x", "coverage.x", "x", "x", beside=("nowhere",))])


def test_every_row_is_complete_and_one_level_deep() -> None:
    for m in METRICS:
        if m.part_of:  # one level: a companion's own row is the metric it belongs to
            assert BY_NAME[m.part_of].part_of is None, m.name
        if m.better is CLOSER:
            assert m.ideal or m.beside, f"{m.name}: closer to what?"
        if STUDY in m.shown:
            assert m.beside, f"{m.name}: a study instrument is read beside the truth's value"
        assert m.definition and not m.definition.endswith("."), m.name
        assert "\n" not in m.definition + m.range_text, m.name


def test_every_key_of_an_evaluation_is_documented_and_every_metric_is_recorded(
        metrics: dict[str, Any]) -> None:
    keys = leaves(metrics)
    undocumented = [k for k in keys if not documented(k)]
    assert not undocumented, (f"{undocumented}: in metrics.json but documented nowhere; add "
                              "them to gmm_vae/analysis/registry.py (METRICS or DETAILS)")
    stale = [m.key for m in METRICS if m.source == METRICS_FILE and m.key not in keys]
    assert not stale, f"{stale}: registered but no evaluation records them"
    assert not [d for d in DETAILS if not any(k == d or k.startswith(d + ".") for k in keys)]


def test_the_documented_check_sees_a_new_key() -> None:
    assert documented("coverage.weights_tv") and documented("timings_s.nll")
    assert not documented("coverage.new_metric")
    assert not documented("latent.kl_new")


def test_numbers_quoted_in_definitions_are_the_codes() -> None:
    from gmm_vae.analysis import coverage
    from gmm_vae.analysis import metrics as m
    from gmm_vae.config import AnalysisConfig

    text = lambda name: BY_NAME[name].definition + " " + BY_NAME[name].ideal  # noqa: E731
    assert f"{m.COLLAPSED_KL}" in text("kl") and f"{m.COLLAPSED_KL}" in text("posterior_collapsed")
    assert f"{m.ACTIVE_UNIT_THRESHOLD}" in text("active_units")
    assert f"{coverage.LITERATURE_SAMPLES:,}" in text("lit_modes")
    assert f"within {coverage.LITERATURE_THRESHOLD:g} std" in text("lit_modes")
    assert f"({AnalysisConfig.min_capture})" in text("modes_captured")
    assert AnalysisConfig.hq_threshold is None and AnalysisConfig.hq_quantile == 0.99
    assert f"χ²_D {AnalysisConfig.hq_quantile} quantile" in text("hq_fraction")
    for dim in (3, 20):
        assert f"{coverage.hq_radius_sq(dim) ** 0.5:.2f} in {dim}-D" in text("hq_fraction")
    assert f"{coverage.HQ_QUANTILE} in any D" in text("hq_perfect")
    assert f"{AnalysisConfig.hist_bins}-bin" in text("modes_hist_vae")


# -------------------------------------------------------------------------- the docs


def readme_glossary() -> str:
    """The table under the README's "## Metrics" heading."""
    section = (ROOT / "README.md").read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    return "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))


def test_readme_glossary_is_the_registrys() -> None:
    assert readme_glossary() == glossary_markdown(), (
        "README.md's Metrics table differs from the registry: paste the output of "
        "`python -m gmm_vae.analysis.glossary --markdown` into it")


def test_glossary_documents_every_metric_once() -> None:
    table = glossary_markdown()
    rows = table.splitlines()[2:]
    assert len(rows) == sum(m.part_of is None for m in METRICS)
    assert all(row.count(" | ") == 2 for row in rows), "a cell holds an unescaped pipe"
    cells = [row.split(" | ")[0] for row in rows]
    for m in METRICS:
        leaf = m.key.rpartition(".")[2]
        home = m.part_of or m.name
        row = cells[[n.name for n in METRICS if n.part_of is None].index(home)]
        assert f"`{m.key}`" in row or f"`.{leaf}`" in row, (m.name, row)


def test_no_page_keeps_a_second_metric_table() -> None:
    """The glossary is the one table of definitions: a docs page (or a second README table)
    whose rows open on metric keys would be a copy that drifts from the registry."""
    keys = {m.key for m in METRICS}
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    copies = []
    for page in pages:
        rows = [line for line in page.read_text().splitlines() if line.startswith("| `")]
        defining = [r for r in rows if r.split("`")[1] in keys]
        if page.name == "README.md":
            defining = [r for r in defining if r + "\n" not in glossary_markdown()]
        copies += [f"{page.relative_to(ROOT)}: {r[:60]}" for r in defining]
    assert not copies, "metric definitions outside the registry's glossary:\n" + "\n".join(copies)


def test_cli_prints_the_glossary(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "gmm_vae.analysis.glossary", "--markdown"],
                          cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == glossary_markdown()


# ------------------------------------------------------------------- its five readers


def test_summary_columns_tags_and_hparams_are_the_registrys() -> None:
    from gmm_vae.analysis.callbacks import ANALYSIS_SCALARS
    from gmm_vae.runs.summarize import METRIC_PATHS

    assert {m.name: m.key for m in shown(CSV)} == METRIC_PATHS
    assert {f"analysis/{m.name}": m.key for m in shown(ANALYSIS)} == ANALYSIS_SCALARS
    assert {m.name for m in shown(HPARAMS)} == {"objective", "modes_captured", "hq_ratio",
                                               "weights_tv", "nll_gap", "active_units", "c2st"}
    assert set(shown(HPARAMS)) <= set(shown(HEADLINE))


def test_hparams_are_logged_under_the_registrys_names(metrics: dict[str, Any]) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger

    from gmm_vae.analysis.search import objective
    from gmm_vae.runs.loggers import log_final

    class Logger(TensorBoardLogger):
        def __init__(self) -> None:
            self.logged: dict[str, float] = {}

        def log_hyperparams(self, params: Any, metrics: Any = None) -> None:
            self.logged = metrics

    logger = Logger()
    trainer = type("Trainer", (), {"loggers": [logger], "global_step": 16, "lightning_module": type(
        "Module", (), {"vae": type("VAE", (), {"latent_dim": 2})})})()
    log_final(trainer, compose_config(TINY), metrics, Path("/run"))  # type: ignore[arg-type]
    logged = logger.logged
    assert set(logged) == {f"hp/{m.name}" for m in shown(HPARAMS)}
    assert logged["hp/weights_tv"] == metrics["coverage"]["weights_tv"]
    assert logged["hp/objective"] == pytest.approx(objective(metrics))


def test_report_rows_are_the_registrys(metrics: dict[str, Any]) -> None:
    from gmm_vae.analysis.report import render_report

    report = render_report(metrics, compose_config(TINY), Path("/run"))
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    for m in (*shown(REPORT), *shown(STUDY)):
        assert any(row.startswith(f"| {md_cell(m.label)} | ") for row in rows), m.label
    for m in shown(REPORT):
        assert md_cell(m.sentence) in report, m.name
    weight = next(r for r in rows if r.startswith("| weight error | "))
    tv, perfect = metrics["coverage"]["weights_tv"], metrics["coverage_truth"]["weights_tv"]
    assert weight.startswith(f"| weight error | {tv:.4f} | 0 (perfect sampler {perfect:.4f}) | ")


def test_summary_markdown_has_a_column_and_a_legend_line_per_headline(tmp_path: Path,
                                                                       metrics) -> None:
    import json

    import yaml

    from gmm_vae.runs.summarize import summarize_sweep

    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["seed=1"]))
    (job / "status.json").write_text(json.dumps({"status": "completed", "objective": 0.25}))
    (job / "evaluation").mkdir()
    (job / "evaluation" / "metrics.json").write_text(json.dumps(metrics))
    md = summarize_sweep(tmp_path)["markdown"].read_text()
    header = next(line for line in md.splitlines() if line.startswith("| job |"))
    for m in shown(HEADLINE):
        assert m.label in header, m.label
        assert f"- **{m.label}**: {m.sentence}." in md, m.name
    assert "| weight error ↓ |" in header and "| HQ ratio (1) |" in header


def test_benchmark_rows_have_the_registrys_columns(metrics: dict[str, Any]) -> None:
    spec = importlib.util.spec_from_file_location("fidelity", ROOT / "benchmarks" / "fidelity.py")
    fidelity = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(fidelity)  # type: ignore[union-attr]
    mixture = fidelity.Mixture("default_s0", "default", ())
    row = fidelity.row_for(mixture, "default", 0, metrics, 1.25)
    # The columns of the committed fidelity_runs.csv: old results stay readable (--update).
    committed = (ROOT / "benchmarks" / "results" / "fidelity_runs.csv").read_text()
    assert set(row) == set(committed.splitlines()[0].split(","))
    assert [k for k in row if k in {m.column for m in shown(BENCH)}] == [
        m.column for m in shown(BENCH)]
    assert row["median_frac"] == round(metrics["coverage"]["median_fraction"], 4)
    assert re.fullmatch(r"yes|no", row["floors_met"])
