"""The ground truth: a GMM whose samples, density and spec files are exactly what they claim."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from gmm_vae.data.gmm import GMM
from gmm_vae.errors import ConfigError


def test_random_gmm_is_valid_and_seeded() -> None:
    a, b = GMM.random(4, 3, seed=7), GMM.random(4, 3, seed=7)
    np.testing.assert_array_equal(a.means, b.means)
    np.testing.assert_array_equal(a.covariances, b.covariances)
    assert a.means.shape == (4, 3) and a.covariances.shape == (4, 3, 3)
    assert a.weights.sum() == pytest.approx(1.0)
    for cov in a.covariances:
        np.testing.assert_allclose(cov, cov.T)
        assert np.linalg.eigvalsh(cov).min() > 0
    c = GMM.random(4, 3, seed=8)
    assert not np.allclose(a.means, c.means)


@pytest.mark.parametrize(("k", "d"), [(1, 1), (4, 3), (8, 5), (3, 10)])
def test_any_k_and_d(k: int, d: int) -> None:
    """Known answers in every shape: label shares match the weights, each point's squared
    Mahalanobis distance to its own component is chi2_D (mean D), and the log-density is
    scipy's."""
    n = 5000
    gmm = GMM.random(k, d, seed=0)
    x, y = gmm.sample(n, np.random.default_rng(0))
    assert x.shape == (n, d) and y.shape == (n,)
    np.testing.assert_allclose(np.bincount(y, minlength=k) / n, gmm.weights, atol=0.04)
    diff = x - gmm.means[y]
    m2 = np.einsum("ni,ni->n", diff, np.linalg.solve(gmm.covariances[y], diff[..., None])[..., 0])
    assert abs(m2.mean() - d) < 5 * np.sqrt(2 * d / n), m2.mean()
    expected = logsumexp([np.log(w) + multivariate_normal(m, c).logpdf(x)
                          for m, c, w in zip(gmm.means, gmm.covariances, gmm.weights,
                                             strict=True)], axis=0)
    np.testing.assert_allclose(gmm.log_prob(x), expected, rtol=1e-9)


def test_sample_statistics_match_parameters() -> None:
    gmm = GMM.random(4, 3, seed=1)
    x, y = gmm.sample(200_000, np.random.default_rng(0))
    shares = np.bincount(y, minlength=4) / len(y)
    np.testing.assert_allclose(shares, gmm.weights, atol=0.005)
    for k in range(4):
        xk = x[y == k]
        np.testing.assert_allclose(xk.mean(axis=0), gmm.means[k], atol=0.03)
        np.testing.assert_allclose(np.cov(xk.T), gmm.covariances[k], atol=0.03)


@pytest.mark.parametrize(("k", "d"), [(4, 1), (4, 3), (3, 50)])
def test_sampling_one_component_at_a_time_gives_the_row_wise_points_bit_for_bit(
        k: int, d: int) -> None:
    """Training data and every truth draw come from ``sample``: mapping one component at a time
    (fast in high D) must not move a single bit of what the row-wise map gave."""
    gmm = GMM.random(k, d, seed=d)
    x, labels = gmm.sample(3000, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    expect_labels = rng.choice(k, size=3000, p=gmm.weights)
    eps = rng.standard_normal((3000, d))
    chol = np.linalg.cholesky(gmm.covariances)[expect_labels]
    expect = gmm.means[expect_labels] + np.einsum("nij,nj->ni", chol, eps)
    assert np.array_equal(labels, expect_labels) and np.array_equal(x, expect)


def test_log_density_matches_scipy() -> None:
    means = np.array([[0.0, 0.0], [3.0, 1.0]])
    covs = np.array([[[1.0, 0.3], [0.3, 0.5]], [[0.7, -0.2], [-0.2, 1.2]]])
    weights = np.array([0.3, 0.7])
    gmm = GMM(means, covs, weights)
    x = np.random.default_rng(0).normal(size=(100, 2)) * 2
    expected = np.log(sum(w * multivariate_normal(m, c).pdf(x)
                          for m, c, w in zip(means, covs, weights, strict=True)))
    np.testing.assert_allclose(gmm.log_prob(x), expected, rtol=1e-10)


def test_spec_file_is_honoured_exactly(tmp_path) -> None:
    spec = {"means": [[0.0, 1.0], [5.0, -2.0], [-4.0, 4.0]],
            "covariances": [[[1.0, 0.2], [0.2, 0.5]], [[0.3, 0.0], [0.0, 0.3]],
                            [[2.0, -0.5], [-0.5, 1.0]]],
            "weights": [0.2, 0.5, 0.3]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    gmm = GMM.from_yaml(path)
    np.testing.assert_array_equal(gmm.means, spec["means"])
    np.testing.assert_array_equal(gmm.covariances, spec["covariances"])
    np.testing.assert_array_equal(gmm.weights, spec["weights"])
    # Round trip: what a run records as gmm.yaml loads back to the same mixture.
    gmm.to_yaml(tmp_path / "gmm.yaml")
    again = GMM.from_yaml(tmp_path / "gmm.yaml")
    np.testing.assert_array_equal(again.covariances, gmm.covariances)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"means": [[0, 0]], "covariances": [[[1, 0], [0, 1]]], "weights": [0.5]},
         "data.spec_path '{path}': weights must sum to 1 (got sum 0.5)"),
        ({"means": [[0, 0]], "covariances": [[[1, 2], [2, 1]]], "weights": [1.0]},
         "data.spec_path '{path}': covariances[0] must be positive-definite (smallest "
         "eigenvalue -1)"),
        ({"means": [[0, 0]], "covariances": [[[1, 0.5], [0, 1]]], "weights": [1.0]},
         "data.spec_path '{path}': covariances[0] must be symmetric"),
        ({"means": [[0, 0]], "covariances": [[[1, 0, 0], [0, 1, 0], [0, 0, 1]]],
          "weights": [1.0]}, "data.spec_path '{path}': covariances must have shape K x D x D "
                             "= [1, 2, 2] to match means (got [1, 3, 3])"),
        ({"means": [[0, 0]], "weights": [1.0]},
         "data.spec_path: '{path}' is missing key(s) covariances"),
        ({"means": [[0, 0], [1, 1]], "covariances": [[[1, 0], [0, 1]]] * 2,
          "weights": [1.2, -0.2]},
         "data.spec_path '{path}': weights must be non-negative (got [1.2, -0.2])"),
    ],
)
def test_bad_spec_gets_one_line_error(tmp_path, spec: dict, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError) as info:
        GMM.from_yaml(path)
    assert str(info.value) == message.format(path=path)


def test_missing_spec_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"data\.spec_path must name an existing YAML file"):
        GMM.from_yaml(tmp_path / "nope.yaml")
