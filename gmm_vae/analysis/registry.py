"""The metric registry: every number an evaluation records, defined once.

``METRICS`` is the one table. Each row names a value of ``evaluation/metrics.json`` (or, for
``objective``, of ``status.json``), gives it a column id, a human name, a one-line definition,
its range and which direction is better, and says where it is shown. Everything that lists
metrics reads this table instead of keeping its own copy:

- the sweep summary (``gmm_vae.runs.sweep_jobs``, ``gmm_vae.runs.summary_tables``): the columns of
  ``summary.csv``, the headline columns of ``summary.md`` and their legend (``CSV``, ``HEADLINE``);
- ``gmm_vae.analysis.callbacks``: the ``analysis/<name>`` scalars (``ANALYSIS``);
- ``gmm_vae.runs.loggers.log_final``: the ``hp/<name>`` metrics (``HPARAMS``);
- ``benchmarks/fidelity.py``: the columns of ``fidelity_runs.csv`` (``BENCH``);
- ``gmm_vae.analysis.report``: the rows of ``report.md`` (``REPORT``, ``STUDY``);
- the README's "Metrics" glossary: ``python -m gmm_vae.analysis.glossary --markdown``
  prints it, and a test fails when the README's table differs.

Adding a metric is one row here (plus the code that computes it). A value read beside another
(a perfect sampler's score, the ground truth's count, a denominator) is a row too, ``part_of``
the metric it belongs to: the glossary documents it in that metric's row. Keys that are context
rather than measures (settings, sample counts, per-component vectors) are in ``DETAILS``, so a
key new to ``metrics.json`` is documented somewhere or a test says where it is missing.

Only the standard library (and ``gmm_vae.values``): the lowest layer of the analysis, imported
by the summary, the report, the callbacks and the benchmarks alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, Flag, auto
from typing import Any

from gmm_vae.values import lookup

METRICS_FILE, STATUS_FILE = "metrics.json", "status.json"


class Better(Enum):
    """Which direction of a metric is better."""

    HIGHER = "higher"
    LOWER = "lower"
    CLOSER = "closer"  # to ``ideal`` or, without one, to the first value it is read ``beside``
    NONE = "none"  # a reference, a verdict or a setting: no direction of its own


class Shown(Flag):
    """Where a metric appears (flags combine: ``CSV | HEADLINE``)."""

    NOWHERE = 0
    CSV = auto()  # a column of a sweep's summary.csv
    HEADLINE = auto()  # a column of summary.md, defined in its legend
    HPARAMS = auto()  # hp/<name> beside the hyper-parameters in TensorBoard
    ANALYSIS = auto()  # analysis/<name>, logged by the analysis callback during training
    BENCH = auto()  # a column of benchmarks/results/fidelity_runs.csv
    REPORT = auto()  # a row of report.md's trusted measures
    STUDY = auto()  # a row of report.md's table of the study's instruments


HIGHER, LOWER, CLOSER, NONE = Better.HIGHER, Better.LOWER, Better.CLOSER, Better.NONE
CSV, HEADLINE, HPARAMS, ANALYSIS = Shown.CSV, Shown.HEADLINE, Shown.HPARAMS, Shown.ANALYSIS
BENCH, REPORT, STUDY, NOWHERE = Shown.BENCH, Shown.REPORT, Shown.STUDY, Shown.NOWHERE


@dataclass(frozen=True)
class Metric:
    """One recorded value.

    ``name`` is its column id (summary.csv, ``analysis/<name>``, ``hp/<name>``), ``key`` its
    dotted path in ``source``, ``label`` the name a reader sees, ``definition`` one sentence
    (markdown). ``ideal`` is the best value in words (the report's reference column), ``note``
    what else to know when reading it. ``beside``: names of the values it is read beside (the
    first is the pair shown with a study instrument); ``out_of``: the name of its denominator
    (``3 / 4``); ``part_of``: the metric whose glossary row documents it. ``bench``: its column
    in fidelity_runs.csv, when the benchmark's name predates the registry. ``target``: the
    value seeds are judged against when aggregated (the worst seed is the farthest from it);
    None for a metric that is not aggregated.
    """

    name: str
    key: str
    label: str
    definition: str
    range: str = ""
    better: Better = NONE
    ideal: str = ""
    note: str = ""
    digits: int = 3
    shown: Shown = NOWHERE
    beside: tuple[str, ...] = ()
    out_of: str | None = None
    part_of: str | None = None
    bench: str | None = None
    source: str = METRICS_FILE
    target: float | None = None

    @property
    def column(self) -> str:
        """Its column in fidelity_runs.csv."""
        return self.bench or self.name

    def read(self, tree: Any) -> Any:
        """Its value in a metrics dict (``status.json``'s for ``source=STATUS_FILE``)."""
        return lookup(tree, self.key)

    @property
    def arrow(self) -> str:
        """``↑``, ``↓``, ``(1)`` (closest to 1), or nothing."""
        if self.better is HIGHER:
            return "↑"
        if self.better is LOWER:
            return "↓"
        return f"({self.ideal})" if self.better is CLOSER and self.ideal else ""

    @property
    def header(self) -> str:
        """A table header: the label and its arrow (``weight error ↓``)."""
        return f"{self.label} {self.arrow}".strip()

    @property
    def range_text(self) -> str:
        """Range and better direction in words: ``0..1, lower is better; a collapsed ...``."""
        if self.better is CLOSER:
            target = self.ideal or f"`{BY_NAME[self.beside[0]].key}`"
            direction = f"closest to {target} is best"
        elif self.better is NONE:
            direction = ""
        else:
            direction = f"{self.better.value} is better"
        text = ", ".join(part for part in (self.range, direction) if part)
        return "; ".join(part for part in (text, self.note) if part)

    @property
    def sentence(self) -> str:
        """Definition, range and direction: ``report.md``'s definition column, the legend."""
        return "; ".join(part for part in (self.definition, self.range_text) if part)


_PERFECT = "a perfect sampler's {} at this sample size (fresh truth samples)"

# In the order of summary.csv's columns; a value read beside a metric follows it.
METRICS: tuple[Metric, ...] = (
    Metric("objective", "objective", "objective",
           "`modes_captured/K \u2212 weights_tv \u2212 max(nll_gap, 0)`, the value a search "
           "maximises (`hp/objective`); NaN when a term is missing or not finite",
           "≤ 1", HIGHER, ideal="1", shown=HEADLINE | HPARAMS, source=STATUS_FILE),
    Metric("modes_captured", "coverage.modes_captured", "modes captured",
           "true components whose high-quality samples, as a share of all samples, reach "
           "`analysis.min_capture` (0.1) of a perfect sampler's share",
           "0..K", HIGHER, ideal="all K", digits=0, out_of="n_components",
           beside=("modes_captured_perfect", "min_capture"),
           shown=CSV | HEADLINE | HPARAMS | ANALYSIS | BENCH | REPORT),
    Metric("n_components", "coverage.n_components", "components",
           "K, the number of true components", digits=0, part_of="modes_captured",
           shown=CSV | BENCH),
    Metric("modes_captured_perfect", "coverage_truth.modes_captured", "perfect sampler",
           _PERFECT.format("count"), digits=0, part_of="modes_captured"),
    Metric("min_capture", "coverage.min_capture", "min_capture",
           "the `analysis.min_capture` the count used", part_of="modes_captured"),
    Metric("hq_fraction", "coverage.hq_fraction", "high-quality share",
           "share of samples whose squared Mahalanobis distance to their nearest true "
           "component is within the χ²_D 0.99 quantile (`analysis.hq_quantile`; radius "
           "`coverage.hq_radius`, 3.37 in 3-D, 6.13 in 20-D), the same test in every "
           "dimension", "0..1", CLOSER, note="above: too concentrated",
           beside=("hq_perfect",), shown=CSV | ANALYSIS | REPORT),
    Metric("hq_perfect", "coverage.hq_perfect", "perfect",
           "a perfect sampler's share, measured on the truth's own samples (0.99 in any D where "
           "components are separated)", part_of="hq_fraction"),
    Metric("hq_fraction_truth", "coverage_truth.hq_fraction", "perfect sampler",
           _PERFECT.format("share"), part_of="hq_fraction"),
    Metric("hq_ratio", "coverage.hq_ratio", "HQ ratio",
           "the high-quality share over a perfect sampler's (`hq_fraction` / `hq_perfect`)",
           "≥ 0", CLOSER, ideal="1", note="above: too concentrated, below: samples off-mode",
           shown=CSV | HEADLINE | HPARAMS | BENCH, target=1.0),
    Metric("median_fraction", "coverage.median_fraction", "median-ellipsoid fraction",
           "share of samples inside their nearest component's median (χ²_D) ellipsoid",
           "0..1", CLOSER, note="above: too concentrated, below: too diffuse",
           beside=("median_perfect", "median_fraction_truth"), bench="median_frac",
           shown=CSV | BENCH | REPORT),
    Metric("median_perfect", "coverage.median_perfect", "perfect",
           "a perfect sampler's, measured on 1,000,000 truth samples (0.5 where components are "
           "separated)", part_of="median_fraction"),
    Metric("median_fraction_truth", "coverage_truth.median_fraction", "truth",
           _PERFECT.format("fraction"), part_of="median_fraction"),
    Metric("weights_tv", "coverage.weights_tv", "weight error",
           "total variation between the shares of all samples (per component, the high-quality "
           "samples nearest it; plus one off-mode bin) and a perfect sampler's shares",
           "0..1", LOWER, ideal="0", note="a collapsed model ≈ 1", digits=4,
           beside=("weights_tv_perfect",),
           shown=CSV | HEADLINE | HPARAMS | ANALYSIS | BENCH | REPORT, target=0.0),
    Metric("weights_tv_hq", "coverage.weights_tv_hq", "weight error among HQ samples",
           "secondary: TV between the true weights and the shares of the high-quality samples "
           "alone, blind to off-mode samples", "0..1", LOWER, ideal="0",
           note="never read it alone", digits=4, beside=("weights_tv_hq_perfect",),
           shown=CSV | ANALYSIS | BENCH | REPORT),
    Metric("weights_tv_perfect", "coverage_truth.weights_tv", "perfect sampler",
           _PERFECT.format("weight error") + ", its noise floor", digits=4, part_of="weights_tv",
           shown=BENCH),
    Metric("weights_tv_hq_perfect", "coverage_truth.weights_tv_hq", "perfect sampler",
           _PERFECT.format("score"), digits=4, part_of="weights_tv_hq"),
    Metric("active_units", "latent.active_units", "active latent units",
           "latent units whose posterior mean varies over the test points by more than 0.01 "
           "(Burda et al. 2016)", "0..`latent.latent_dim`", ideal="≥ 1",
           note="0 = posterior collapse; a table marks a collapsed model (`latent.collapsed`) "
                "**collapsed**", digits=0, out_of="latent_dim",
           shown=CSV | HEADLINE | HPARAMS | ANALYSIS | BENCH | REPORT),
    Metric("latent_dim", "latent.latent_dim", "latent dimension", "the number of latent units",
           digits=0, part_of="active_units"),
    Metric("kl", "latent.kl", "KL(q(z|x) ‖ p(z))",
           "mean KL of the posterior from the prior, nats per point", "≥ 0", ideal="> 0.05",
           note="near 0 = the decoder ignores z", shown=CSV | ANALYSIS | REPORT),
    Metric("posterior_collapsed", "latent.collapsed", "posterior collapse",
           "true when no unit is active or KL < 0.05, said in words in `latent.verdict`",
           digits=0, part_of="kl",
           shown=CSV | ANALYSIS | BENCH),
    Metric("nll_model", "nll.model", "held-out NLL, model",
           "held-out negative log-likelihood of the test set, nats per point, by an "
           "importance-weighted bound (IWAE)", better=LOWER,
           note="`nll.true` is the best possible", beside=("nll_true", "iwae_samples"),
           shown=CSV | REPORT),
    Metric("nll_true", "nll.true", "true density",
           "the true mixture's exact one", part_of="nll_model", shown=CSV),
    Metric("iwae_samples", "nll.iwae_samples", "IWAE samples",
           "importance samples per point of the bound (`analysis.iwae_samples`)", digits=0,
           part_of="nll_model"),
    Metric("nll_gap", "nll.gap", "NLL gap",
           "held-out NLL of the model minus that of the true density (`nll.model` \u2212 "
           "`nll.true`), nats per point", "≥ 0 in expectation", LOWER, ideal="0",
           note="0 is perfect",
           shown=CSV | HEADLINE | HPARAMS | ANALYSIS | BENCH | REPORT, target=0.0),
    Metric("sliced_wasserstein", "distance.sliced_wasserstein", "sliced Wasserstein",
           "sliced 2-Wasserstein distance between VAE and true samples, data units",
           "≥ 0", LOWER, note="a perfect sampler scores the floor, not 0",
           beside=("sliced_wasserstein_floor",),
           shown=CSV | HEADLINE | ANALYSIS | BENCH | REPORT, target=0.0),
    Metric("sliced_wasserstein_floor", "distance.sliced_wasserstein_floor", "floor",
           "the same distance between two truth samples of that size",
           part_of="sliced_wasserstein"),
    Metric("c2st", "c2st.accuracy", "C2ST accuracy",
           "classifier two-sample test (sbibm's recipe): 5-fold cross-validated accuracy of an "
           "MLP telling the samples from as many true samples", "0..1", CLOSER, ideal="0.5",
           note="0.5 = indistinguishable, 1 = every sample told apart; a perfect sampler "
                "scores the floor",
           beside=("c2st_floor",), shown=CSV | HEADLINE | HPARAMS | BENCH | REPORT,
           target=0.5),
    Metric("c2st_floor", "c2st.floor", "floor",
           "the same test between two independent truth samples of that size, its noise floor",
           part_of="c2st", shown=CSV | BENCH),
    Metric("k_data_vae", "clusters.vae_samples.k_data", "cluster count k",
           "the study's instrument: cluster count k of the samples (`clusters.criterion`, BIC "
           "by default, k up to `clusters.k_max`)", "≥ 1", CLOSER, digits=0,
           beside=("k_data_truth",), bench="k_vae",
           shown=CSV | HEADLINE | ANALYSIS | BENCH | STUDY),
    Metric("k_latent_vae", "clusters.vae_samples.k_latent", "cluster count k of the latent codes",
           "the same count on their latent codes", better=CLOSER, digits=0,
           beside=("k_latent_truth",),
           part_of="k_data_vae", shown=CSV | ANALYSIS | STUDY),
    Metric("k_data_truth", "clusters.ground_truth.k_data", "cluster count k, truth",
           "the count on true samples", digits=0, part_of="k_data_vae",
           bench="k_truth", shown=CSV | ANALYSIS | BENCH),
    Metric("k_latent_truth", "clusters.ground_truth.k_latent",
           "cluster count k of the latent codes, truth", "the count on their latent codes",
           digits=0, part_of="k_data_vae", shown=CSV),
    Metric("ari_data_vae", "clusters.vae_samples.ari_data", "adjusted Rand index",
           "adjusted Rand index of the samples' clusters against the true components",
           "1 = true partition, 0 = chance", HIGHER, digits=2, beside=("ari_data_truth",),
           shown=STUDY),
    Metric("ari_latent_vae", "clusters.vae_samples.ari_latent",
           "adjusted Rand index of the latent codes", "the same for the latent codes' clusters",
           better=HIGHER, digits=2, beside=("ari_latent_truth",), part_of="ari_data_vae",
           shown=STUDY),
    Metric("ari_data_truth", "clusters.ground_truth.ari_data", "adjusted Rand index, truth",
           "the index on true samples", digits=2, part_of="ari_data_vae"),
    Metric("ari_latent_truth", "clusters.ground_truth.ari_latent",
           "adjusted Rand index of the latent codes, truth", "on their latent codes",
           digits=2, part_of="ari_data_vae"),
    Metric("modes_hist_vae", "modes.vae_samples", "histogram modes",
           "the study's instrument: peaks of a 50-bin histogram, all coordinates pooled", "≥ 0",
           CLOSER, note="undercounts", digits=0, beside=("modes_hist_truth",),
           shown=CSV | HEADLINE | ANALYSIS | STUDY),
    Metric("modes_hist_truth", "modes.ground_truth", "histogram modes, truth",
           "the count on true samples", digits=0, part_of="modes_hist_vae", shown=CSV),
    Metric("modes_axis_vae", "modes.vae_samples_per_axis", "histogram modes per axis",
           "one count per axis", better=CLOSER, digits=0, beside=("modes_axis_truth",),
           part_of="modes_hist_vae", shown=STUDY),
    Metric("modes_axis_truth", "modes.ground_truth_per_axis", "histogram modes per axis, truth",
           "on true samples", digits=0, part_of="modes_hist_vae"),
    Metric("modes_nd_vae", "modes.nd_vae_samples", "N-D mode count",
           "modes found by mean-shift in all D dimensions, no true parameters used", "≥ 1",
           CLOSER, digits=0, beside=("modes_nd_truth",), shown=CSV | ANALYSIS | REPORT),
    Metric("modes_nd_truth", "modes.nd_ground_truth", "truth", "the count on true samples",
           digits=0, part_of="modes_nd_vae"),
    Metric("lit_modes", "literature.modes", "literature modes",
           "the mode-collapse papers' protocol: of the first 2,500 samples, the components with "
           "a sample within 3 std", "0..K", HIGHER, note="lenient by design", digits=0,
           shown=BENCH),
    Metric("lit_hq", "literature.hq_percent", "literature HQ %", "the % of such samples",
           "0..100", HIGHER, digits=1, part_of="lit_modes", shown=BENCH),
)



def index(table: Sequence[Metric]) -> dict[str, Metric]:
    """Name -> metric; ValueError when a name or key is registered twice or a metric refers
    (``beside``, ``out_of``, ``part_of``) to a name that is not registered."""
    by_name: dict[str, Metric] = {}
    keys: dict[str, str] = {}
    for m in table:
        if m.name in by_name:
            raise ValueError(f"metric name {m.name!r} is registered twice")
        if m.key in keys:
            raise ValueError(f"key {m.key!r} is registered twice ({keys[m.key]}, {m.name})")
        by_name[m.name], keys[m.key] = m, m.name
    for m in table:
        for other in (*m.beside, m.out_of, m.part_of):
            if other is not None and other not in by_name:
                raise ValueError(f"{m.name} refers to {other!r}, which is not registered")
    return by_name


BY_NAME: dict[str, Metric] = index(METRICS)

# Keys of metrics.json that are context rather than measures, and where they are read.
DETAILS: dict[str, str] = {
    "checkpoint": "the checkpoint evaluated (final, last, best or a path)",
    "seed": "the evaluation's seed",
    "n_samples": "VAE and truth samples drawn for everything but coverage",
    "nonfinite_fraction": "share of VAE samples that are inf or NaN (counted off-mode)",
    "timings_s": "seconds per stage of the evaluation (report.md's last line)",
    "coverage.n_samples": "samples behind coverage.* (`analysis.coverage_samples`, fewer where "
                          "one sample costs more than the evaluation's work budget allows)",
    "nll.n_points": "test points behind nll.* (`data.n_test`, fewer where the IWAE bound of "
                    "one costs more than the evaluation's work budget allows)",
    "coverage.hq_radius": "the Mahalanobis radius of the high-quality rule: √(χ²_D quantile "
                          "`analysis.hq_quantile`), or a fixed `analysis.hq_threshold`",
    "coverage.shares": "per component, its share of all samples: report.md's component table",
    "coverage.off_mode_share": "the off-mode share: report.md's component table",
    "coverage.reference_shares": "a perfect sampler's shares: report.md's component table",
    "coverage.capture_ratio": "per component, share / perfect share: report.md's table",
    "coverage.captured": "per component, ratio ≥ min_capture: report.md's component table",
    "coverage_truth.n_samples": "samples behind coverage_truth.*",
    "literature.n_samples": "samples behind literature.* (2,500 or fewer)",
    "latent.kl_per_dim": "KL per latent unit, logged as analysis/kl_dim_<i>",
    "latent.mean_variance": "per latent unit, the variance of its posterior mean",
    "latent.verdict": "the latent verdict in words (status.json, the run's summary)",
    "clusters.criterion": "the cluster-count criterion (`analysis.cluster_criterion`)",
    "clusters.k_max": "the largest k tried (`analysis.k_max`)",
    "c2st.n_samples": "points of each set behind c2st.* (the evaluation's, a multiple of 5)",
    "c2st.steps": "optimiser steps the C2ST classifiers trained (its stopping rule)",
}


# Keys only a judgement of samples from elsewhere writes (``gmm_vae.analysis.judge``).
JUDGEMENT_DETAILS: dict[str, str] = {
    "source": "the samples judged: their file, or an array (evaluate.py samples=...)",
    "truth": "the mixture judged against: its spec file or run directory",
    "skipped": "the instruments left out for lack of a model, and why",
}


def shown(where: Shown) -> list[Metric]:
    """The metrics shown in ``where``, in table order."""
    return [m for m in METRICS if where in m.shown]


def companions(metric: Metric) -> list[Metric]:
    """The values documented in ``metric``'s glossary row."""
    return [m for m in METRICS if m.part_of == metric.name]


def documented(key: str) -> bool:
    """Whether a key of metrics.json is a registered metric or a listed detail."""
    return any(key == m.key for m in METRICS) or any(
        key == d or key.startswith(d + ".") for d in (*DETAILS, *JUDGEMENT_DETAILS))
