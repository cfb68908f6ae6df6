"""The instruments of metrics.py against answers known in advance."""

from __future__ import annotations

import numpy as np
import pytest

from gmm_vae.analysis import coverage, metrics
from gmm_vae.data.gmm import GMM

# Four components 12 units apart with standard deviation 0.5-0.8: no metric can confuse them.
MEANS = np.array([[0.0, 0.0, 0.0], [12.0, 0.0, 0.0], [0.0, 12.0, 0.0], [0.0, 0.0, 12.0]])


@pytest.fixture(scope="module")
def separated() -> GMM:
    covs = np.stack([np.diag([0.5, 0.6, 0.7]) ** 2, np.diag([0.8, 0.5, 0.5]) ** 2,
                     np.eye(3) * 0.6**2, np.diag([0.5, 0.8, 0.6]) ** 2])
    return GMM(MEANS, covs, np.array([0.1, 0.2, 0.3, 0.4]))


@pytest.fixture(scope="module")
def truth(separated: GMM) -> tuple[np.ndarray, np.ndarray]:
    return separated.sample(20_000, np.random.default_rng(0))


@pytest.mark.parametrize("criterion", ["silhouette", "bic"])
def test_optimal_k_finds_the_four_separated_components(truth, criterion: str) -> None:
    x, labels = truth
    k, found = metrics.optimal_k(x[:1500], k_max=6, criterion=criterion)
    assert k == 4
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(labels[:1500], found) == pytest.approx(1.0)


def test_compare_clusters_reports_k_and_ari_for_points_and_codes(truth) -> None:
    x, labels = truth
    # A 2-D "latent" that keeps the separation: the first two principal directions.
    codes = x[:1500] @ np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    out = metrics.compare_clusters(x[:1500], codes, k_max=6, labels=labels[:1500])
    assert (out["k_data"], out["k_latent"]) == (4, 4)
    assert out["ari_data"] == pytest.approx(1.0)
    assert out["ari_latent"] == pytest.approx(1.0)


def test_mode_coverage_of_true_samples_is_complete_and_calibrated(separated, truth) -> None:
    x, _ = truth
    cov = coverage.mode_coverage(x, separated)
    assert cov["modes_captured"] == 4
    assert cov["n_components"] == 4
    assert cov["weights_tv"] < 0.02
    assert cov["hq_perfect"] == pytest.approx(0.99, abs=1e-9)  # the analytic perfect share
    assert cov["hq_radius"] == pytest.approx(3.368, abs=1e-3)  # sqrt(chi2_3 0.99 quantile)
    assert cov["hq_fraction"] == pytest.approx(cov["hq_perfect"], abs=0.01)
    assert cov["hq_ratio"] == pytest.approx(1.0, abs=0.011)
    assert cov["median_fraction"] == pytest.approx(0.5, abs=0.02)
    assert cov["captured"] == [True] * 4


def test_mode_coverage_in_chunks_equals_coverage_in_one_pass(separated, truth,
                                                             monkeypatch) -> None:
    x, _ = truth
    whole = coverage.mode_coverage(x, separated)
    monkeypatch.setattr(coverage, "_COVERAGE_CHUNK", 777)  # 20,000 rows in 26 uneven chunks
    chunked = coverage.mode_coverage(x, separated)
    assert chunked == whole
    assert whole["n_samples"] == len(x)


def test_mode_coverage_of_one_component_captures_one_of_four(separated) -> None:
    rng = np.random.default_rng(1)
    one = MEANS[2] + 0.6 * rng.standard_normal((5000, 3))
    cov = coverage.mode_coverage(one, separated)
    assert cov["modes_captured"] == 1
    assert cov["captured"] == [False, False, True, False]
    # All high-quality mass (share p = P(HQ)) on a component a perfect sampler gives 0.3 p:
    # TV = (1 - 0.3) p, the off-mode bins agreeing.
    p = coverage.perfect_hq_fraction(3)
    assert cov["weights_tv"] == pytest.approx(0.7 * p, abs=0.01)
    assert cov["weights_tv_hq"] == pytest.approx(0.7)


def test_samples_at_the_means_are_all_inside_the_median_ellipsoid(separated) -> None:
    at_means = np.repeat(MEANS, 250, axis=0)
    cov = coverage.mode_coverage(at_means, separated)
    assert cov["median_fraction"] == 1.0
    assert cov["hq_fraction"] == 1.0  # above the perfect 0.99: too concentrated


def test_perfect_hq_fraction_is_the_quantile_in_every_dimension() -> None:
    for dim in (1, 2, 3, 10, 20, 50, 200):
        assert coverage.perfect_hq_fraction(dim) == pytest.approx(0.99, abs=1e-9)
    assert coverage.hq_radius_sq(2) == pytest.approx(9.2103, abs=1e-4)  # -2 ln 0.01
    # A fixed Mahalanobis radius (the rule before issue 23) keeps less mass as D grows:
    # P(chi2_D <= 9) is 0.971 in 3-D and 0.017 in 20-D.
    assert coverage.perfect_hq_fraction(3, threshold=3.0) == pytest.approx(0.9707, abs=1e-4)
    assert coverage.perfect_hq_fraction(1, threshold=3.0) == pytest.approx(0.9973, abs=1e-4)
    assert coverage.perfect_hq_fraction(20, threshold=3.0) == pytest.approx(0.0171, abs=1e-4)


def test_identify_modes_counts_two_peaks_of_a_bimodal_sample() -> None:
    rng = np.random.default_rng(2)
    bimodal = np.concatenate([rng.normal(-4, 1, 25_000), rng.normal(4, 1, 25_000)])
    out = metrics.identify_modes(bimodal[:, None])
    assert out["flattened"] == 2
    assert out["per_axis"] == [2]
    peaks = metrics.histogram_modes(bimodal).peaks
    np.testing.assert_allclose(np.sort(peaks), [-4, 4], atol=0.5)


def test_identify_modes_counts_one_peak_of_a_unimodal_sample() -> None:
    unimodal = np.random.default_rng(3).normal(0, 1, (50_000, 1))
    out = metrics.identify_modes(unimodal)
    assert out["flattened"] == 1
    assert out["max_per_axis"] == 1


def test_count_modes_finds_the_four_components(truth) -> None:
    x, _ = truth
    out = metrics.count_modes(x[:3000])
    assert out["count"] == 4
    centres = np.array(out["centres"])
    # Each found centre is near one true mean, and every mean is found.
    dist = np.linalg.norm(centres[:, None, :] - MEANS[None, :, :], axis=2)
    assert sorted(dist.argmin(axis=1).tolist()) == [0, 1, 2, 3]
    assert dist.min(axis=1).max() < 0.5


def test_heldout_nll_gap_is_zero_when_the_model_is_the_truth(separated, truth) -> None:
    x, _ = truth
    lp = separated.log_prob(x[:1000])
    out = metrics.heldout_nll(lp, lp)
    assert out["gap"] == 0.0
    assert out["model"] == out["true"] == pytest.approx(-lp.mean())
    worse = metrics.heldout_nll(lp - 0.5, lp)
    assert worse["gap"] == pytest.approx(0.5)


def test_sliced_wasserstein_is_zero_for_identical_clouds_and_grows_with_a_shift(truth) -> None:
    x, _ = truth
    a = x[:2000]
    assert metrics.sliced_wasserstein(a, a) == pytest.approx(0.0, abs=1e-9)
    shifts = [metrics.sliced_wasserstein(a, a + np.array([s, 0.0, 0.0])) for s in (0.5, 1.0, 2.0)]
    assert shifts[0] < shifts[1] < shifts[2]
    # A shift s along one axis of a 3-D cloud moves each random projection by s*theta_x, so the
    # sliced 2-Wasserstein distance is s * sqrt(E[theta_x^2]) = s / sqrt(3).
    assert shifts[2] == pytest.approx(2.0 / np.sqrt(3.0), rel=0.1)


def test_finite_or_none_turns_non_finite_numbers_into_none() -> None:
    assert metrics.finite_or_none(1.5) == 1.5
    assert metrics.finite_or_none(float("nan")) is None
    assert metrics.finite_or_none(float("inf")) is None


def test_optimal_k_on_collapsed_samples_is_one() -> None:
    """A collapsed VAE emits (nearly) one point: silhouette is undefined, the answer is k=1."""
    from gmm_vae.analysis.metrics import optimal_k

    x = np.zeros((500, 3))
    x[0] = 1e-9  # one stray point: KMeans finds at most 2 distinct clusters
    k, labels = optimal_k(x, k_max=6, criterion="silhouette")
    assert k in (1, 2) and len(labels) == 500
    k, _ = optimal_k(np.zeros((300, 2)), k_max=5, criterion="silhouette")
    assert k == 1


def test_assign_components_gives_the_nearest_component_and_its_squared_distance(
        separated) -> None:
    """Known distances: a mean is at 0 from its own component; 2 std along an axis of the
    isotropic component (std 0.6) is at exactly 4; a non-finite sample is at infinity."""
    points = np.vstack([MEANS, MEANS[2] + [1.2, 0.0, 0.0], [[np.nan, 0.0, 0.0]],
                        [[np.inf, 0.0, 0.0]]])
    nearest, d2 = coverage.assign_components(points, separated)
    assert nearest[:5].tolist() == [0, 1, 2, 3, 2]
    np.testing.assert_allclose(d2[:5], [0.0, 0.0, 0.0, 0.0, 4.0], atol=1e-9)
    assert np.isinf(d2[5:]).all()
    # Non-finite samples are off-mode, never high quality, in the coverage built on this.
    cov = coverage.mode_coverage(points[5:], separated)
    assert cov["hq_fraction"] == 0.0 and cov["off_mode_share"] == 1.0


def test_assign_components_of_a_collapsed_model_puts_nothing_near_a_mode(separated) -> None:
    """A broken model: every sample at the data's centre, between the four components."""
    centre = np.repeat(MEANS.mean(axis=0, keepdims=True), 1000, axis=0)
    nearest, d2 = coverage.assign_components(centre, separated)
    assert ((nearest >= 0) & (nearest < 4)).all()
    assert d2.min() > coverage.hq_radius_sq(3)  # outside every high-quality ellipsoid
    assert coverage.mode_coverage(centre, separated)["modes_captured"] == 0


def _rare_component_mixture() -> GMM:
    """Three components of ~1/3 and one of 0.5%, all 10 std apart."""
    means = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    weights = np.array([0.335, 0.33, 0.33, 0.005])
    return GMM(means, np.stack([np.eye(2)] * 4), weights / weights.sum())


def test_bic_reads_a_rare_component_only_from_enough_points() -> None:
    """BIC fits on at most ``bic_points`` points: with 4,000 (~20 of the 0.5% component) it
    reads 4 on every draw; with 400 (~2 of it) it misreads most draws (measured: 4, 3, 3, 3).
    The labels cover every point either way."""
    gmm = _rare_component_mixture()
    enough, few = [], []
    for draw in range(4):
        x, _ = gmm.sample(20_000, np.random.default_rng(draw))
        k, labels = metrics.optimal_k(x, 10, "bic", bic_points=4000)
        enough.append(k)
        assert len(labels) == len(x)
        few.append(metrics.optimal_k(x, 10, "bic", bic_points=400)[0])
    assert enough == [4, 4, 4, 4]
    assert sum(k != 4 for k in few) >= 2, few


def test_bic_fits_a_subset_of_distinct_rows_or_every_row(monkeypatch) -> None:
    seen: list[np.ndarray] = []
    real = metrics._bic_scan

    def spy(x, fit_rows, *args):  # type: ignore[no-untyped-def]
        seen.append(np.asarray(fit_rows))
        return real(x, fit_rows, *args)

    monkeypatch.setattr(metrics, "_bic_scan", spy)
    x = np.random.default_rng(0).standard_normal((3000, 2))
    metrics.optimal_k(x, 4, "bic", bic_points=500)
    metrics.optimal_k(x[:300], 4, "bic", bic_points=500)
    assert len(seen[0]) == 500 and len(np.unique(seen[0])) == 500
    assert seen[1].tolist() == list(range(300))


def test_bic_reads_a_collapsed_model_as_one_cluster() -> None:
    """A broken model's samples, one tight blob (and the degenerate case, one repeated point):
    BIC can answer 1, which silhouette cannot."""
    blob = 0.01 * np.random.default_rng(0).standard_normal((3000, 3))
    k, labels = metrics.optimal_k(blob, 10, "bic")
    assert k == 1 and len(labels) == 3000
    k, labels = metrics.optimal_k(np.zeros((500, 3)), 10, "bic")
    assert k == 1 and (labels == 0).all()


@pytest.fixture(scope="module")
def overlapping() -> GMM:
    """Two unit 2-D Gaussians 1.5 std apart: a sample is often nearer the other one."""
    return GMM(np.array([[0.0, 0.0], [1.5, 0.0]]), np.stack([np.eye(2)] * 2),
               np.array([0.5, 0.5]))


def test_hq_ratio_and_median_of_a_perfect_sampler_hold_where_components_overlap(
        overlapping: GMM) -> None:
    """Against the measured perfect sampler a perfect sampler reads 1 and calibrated; against
    the analytic chi-square shares it read above 1 and 'too concentrated' (0.607 vs 0.5)."""
    from gmm_vae.analysis.evaluation import coverage_reference

    ref = coverage_reference(overlapping, seed=0, n=400_000)
    pts = overlapping.sample(200_000, np.random.default_rng(5))[0]
    cov = coverage.mode_coverage(pts, overlapping, None, 0.1, *ref)
    assert cov["hq_perfect"] == pytest.approx(0.9936, abs=0.002)  # analytic (separated): 0.99
    assert cov["hq_ratio"] == pytest.approx(1.0, abs=0.002)
    assert cov["median_perfect"] == pytest.approx(0.607, abs=0.005)
    assert cov["median_fraction"] == pytest.approx(cov["median_perfect"], abs=0.005)
    # A sampler too concentrated (half the spread) still reads so against that reference.
    tight = overlapping.means[overlapping.sample(50_000, np.random.default_rng(6))[1]]
    tight = tight + 0.5 * np.random.default_rng(7).standard_normal(tight.shape)
    narrow = coverage.mode_coverage(tight, overlapping, None, 0.1, *ref)
    assert narrow["median_fraction"] > cov["median_perfect"] + 0.25
    assert narrow["hq_ratio"] > 1.0


class _FakeKMeans:
    """KMeans stand-in: no work, centres of the right shape."""

    def __init__(self, n_clusters: int, **_: object) -> None:
        self.k = n_clusters

    def fit(self, x: np.ndarray) -> _FakeKMeans:
        self.cluster_centers_ = x[: self.k]
        return self


def _fake_bic(monkeypatch, true_k: int) -> list[int]:
    """Replace the scan's mixture by one whose BIC is (k - true_k)^2: the ks it tries."""
    import sklearn.cluster
    import sklearn.mixture

    tried: list[int] = []

    class FakeMixture:
        def __init__(self, k: int, **_: object) -> None:
            self.k = k

        def fit(self, x: np.ndarray) -> FakeMixture:
            tried.append(self.k)
            return self

        def bic(self, x: np.ndarray) -> float:
            return float((self.k - true_k) ** 2)

        def predict(self, x: np.ndarray) -> np.ndarray:
            return np.arange(len(x)) % self.k

    monkeypatch.setattr(sklearn.cluster, "KMeans", _FakeKMeans)
    monkeypatch.setattr(sklearn.mixture, "GaussianMixture", FakeMixture)
    return tried


def test_bic_scan_up_to_ten_tries_every_k_as_the_one_by_one_scan(monkeypatch) -> None:
    """Where the best k is small (the default mixture's 4) the scan is the one it replaced:
    every k from 1 until k is past the best by more than 5."""
    tried = _fake_bic(monkeypatch, true_k=4)
    x = np.random.default_rng(0).standard_normal((500, 3))
    assert metrics.optimal_k(x, 10, "bic")[0] == 4
    assert tried == list(range(1, 10))  # 10 - 4 > 5: the scan stops


@pytest.mark.parametrize("true_k", [13, 37, 50, 99])
def test_bic_scan_of_many_components_is_coarse_then_bisected(monkeypatch, true_k: int) -> None:
    """For K = 50 the one-by-one scan fitted k = 1..100 (sum of k: 5,050, the cost); the
    coarse scan and its refinement find the same minimum in about 30 fits, a fifth of the
    cost, growing as K log K instead of K^2."""
    tried = _fake_bic(monkeypatch, true_k)
    x = np.random.default_rng(0).standard_normal((1000, 3))
    k_max = min(100, 2 * true_k)
    assert metrics.optimal_k(x, k_max, "bic")[0] == true_k
    assert len(tried) == len(set(tried))  # no k fitted twice
    assert {true_k - 1, true_k, true_k + 1} & set(range(1, k_max + 1)) <= set(tried)
    if true_k == 50:
        assert len(tried) <= 32 and sum(tried) <= 1000


def test_many_dimensional_points_are_counted_on_their_leading_components() -> None:
    """Up to 20-D the counts read every coordinate (the same numbers as before); in 200-D a
    full-covariance mixture has more parameters per component than points and bin seeding
    finds no mode (mean shift raised): both read the 20 leading principal components."""
    x20 = np.random.default_rng(0).standard_normal((50, 20))
    assert np.array_equal(metrics.leading_components(x20), x20)
    gmm = GMM.random(4, 200, seed=1)
    x, labels = gmm.sample(1000, np.random.default_rng(0))
    lead = metrics.leading_components(x)
    assert lead.shape == (1000, metrics.MAX_COUNT_DIMS)
    k, found = metrics.optimal_k(x, 6, "bic")
    from sklearn.metrics import adjusted_rand_score

    assert k == 4 and adjusted_rand_score(labels, found) == pytest.approx(1.0)
    assert metrics.count_modes(x)["count"] == 4
