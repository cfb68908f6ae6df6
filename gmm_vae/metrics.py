"""The instruments that judge a VAE against the true mixture: pure functions on arrays.

Two families. The study's own (``compare_clusters``, ``identify_modes``) are reproduced
faithfully so its numbers can be compared. The ones a researcher trusts (``mode_coverage``,
``heldout_nll``, ``sliced_wasserstein``, ``count_modes``) are sound in any dimension. Nothing here
touches Lightning or the file system; callbacks and ``evaluate.py`` call these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.signal import find_peaks
from scipy.stats import chi2

from gmm_vae.gmm import GMM
from gmm_vae.resources import coverage_bytes_per_row, rows_per_chunk

# ---------------------------------------------------------------------------------- clusters


def optimal_k(x: np.ndarray, k_max: int = 10, criterion: str = "silhouette",
              seed: int = 0, max_points: int = 1000) -> tuple[int, np.ndarray]:
    """The number of KMeans clusters that best explains ``x``, and the labels at that k.

    ``silhouette``: highest mean silhouette over k = 2..k_max (cannot answer 1).
    ``bic``: lowest BIC of a full-covariance Gaussian mixture over k = 1..k_max (can answer 1).
    ``elbow``: the knee of KMeans inertia over k = 1..k_max (largest distance to the chord).
    Silhouette is computed on at most ``max_points`` points: it is quadratic in n.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    k_max = max(1, min(k_max, n - 1))
    rng = np.random.default_rng(seed)
    sub = rng.choice(n, size=min(n, max_points), replace=False)

    def kmeans(k: int) -> Any:
        return KMeans(n_clusters=k, n_init=4, random_state=seed).fit(x)

    if criterion == "bic":
        from sklearn.mixture import GaussianMixture

        fits = [GaussianMixture(k, covariance_type="full", random_state=seed, n_init=2).fit(x)
                for k in range(1, k_max + 1)]
        best = int(np.argmin([f.bic(x) for f in fits]))
        return best + 1, fits[best].predict(x)
    if criterion == "elbow":
        fits = [kmeans(k) for k in range(1, k_max + 1)]
        inertia = np.array([f.inertia_ for f in fits])
        ks = np.arange(1, k_max + 1, dtype=np.float64)
        if k_max < 3 or inertia[0] <= 0:
            return 1, fits[0].labels_
        # Normalise both axes, then take the point farthest below the first-to-last chord.
        xs = (ks - ks[0]) / (ks[-1] - ks[0])
        ys = (inertia - inertia[-1]) / (inertia[0] - inertia[-1] + 1e-300)
        best = int(np.argmax((1 - xs) - ys))
        return best + 1, fits[best].labels_
    if criterion != "silhouette":
        raise ValueError(f"criterion must be one of silhouette, bic, elbow (got {criterion!r})")
    if k_max < 2:
        return 1, np.zeros(n, dtype=int)
    best_k, best_score, best_labels = 1, -np.inf, np.zeros(n, dtype=int)
    for k in range(2, k_max + 1):
        fit = kmeans(k)
        # Collapsed data (a VAE whose samples are all alike) gives fewer distinct clusters
        # than asked: silhouette is undefined there, and k = 1 is the honest answer.
        if len(np.unique(fit.labels_[sub])) < 2:
            continue
        score = silhouette_score(x[sub], fit.labels_[sub])
        if score > best_score:
            best_k, best_score, best_labels = k, score, fit.labels_
    return best_k, best_labels


def cluster_count(x: np.ndarray, k_max: int = 10, criterion: str = "silhouette",
                  labels: np.ndarray | None = None, seed: int = 0) -> dict[str, float | int]:
    """``{"k": optimal KMeans k}``, plus ``"ari"`` against true ``labels`` when given."""
    from sklearn.metrics import adjusted_rand_score

    k, found = optimal_k(x, k_max, criterion, seed)
    out: dict[str, float | int] = {"k": int(k)}
    if labels is not None:
        out["ari"] = float(adjusted_rand_score(labels, found))
    return out


def compare_clusters(points: np.ndarray, latent: np.ndarray, k_max: int = 10,
                     criterion: str = "silhouette", labels: np.ndarray | None = None,
                     seed: int = 0) -> dict[str, float | int]:
    """The study's instrument: the optimal KMeans k on the points and on their latent codes.

    ``latent`` is the VAE encoder's output for ``points`` (posterior means). With true
    component ``labels``, the adjusted Rand index of each clustering is reported as well
    (1 = the clustering is the true partition, 0 = chance).
    """
    data = cluster_count(points, k_max, criterion, labels, seed)
    codes = cluster_count(latent, k_max, criterion, labels, seed)
    return merge_cluster_counts(data, codes)


def merge_cluster_counts(data: dict[str, float | int],
                         latent: dict[str, float | int]) -> dict[str, float | int]:
    """``compare_clusters``' keys from the two ``cluster_count`` results."""
    out: dict[str, float | int] = {"k_data": data["k"], "k_latent": latent["k"]}
    if "ari" in data:
        out["ari_data"], out["ari_latent"] = data["ari"], latent["ari"]
    return out


# ------------------------------------------------------------------------------------ modes


@dataclass(frozen=True)
class HistogramModes:
    """Peaks of one density histogram: their count, centres and the histogram itself."""

    count: int
    peaks: np.ndarray
    density: np.ndarray
    edges: np.ndarray


def histogram_modes(values: np.ndarray, bins: int = 50, height: float = 0.1,
                    distance: int = 3) -> HistogramModes:
    """Peaks of a 1-D density histogram via ``scipy.signal.find_peaks``.

    ``height`` is relative to the tallest bin (0.1 keeps peaks at least 10% as tall), so the
    threshold means the same whatever the data's scale; ``distance`` is in bins.
    """
    density, edges = np.histogram(np.asarray(values).ravel(), bins=bins, density=True)
    # Pad with zeros so a peak in the first or last bin is still a peak.
    padded = np.concatenate([[0.0], density, [0.0]])
    idx, _ = find_peaks(padded, height=height * density.max(), distance=distance)
    idx = idx - 1
    centres = 0.5 * (edges[:-1] + edges[1:])
    return HistogramModes(len(idx), centres[idx], density, edges)


def identify_modes(x: np.ndarray, bins: int = 50, height: float = 0.1,
                   distance: int = 3) -> dict[str, Any]:
    """The study's instrument: peaks of a 50-bin density histogram, read two ways.

    ``flattened``: all coordinates pooled into one histogram, as the study did with its 3-D
    data. ``per_axis``: one histogram per coordinate. Both undercount: components that overlap
    in a 1-D projection merge into one peak, and pooling axes mixes unrelated coordinates, so a
    4-mode 3-D mixture can show a single flattened peak. Use ``count_modes`` for an N-D count.
    """
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    flat = histogram_modes(x, bins, height, distance)
    per_axis = [histogram_modes(x[:, j], bins, height, distance).count for j in range(x.shape[1])]
    return {"flattened": flat.count, "per_axis": per_axis, "max_per_axis": max(per_axis)}


def count_modes(x: np.ndarray, min_share: float = 0.01, n_neighbors: int = 50,
                bandwidth_factor: float = 2.0, max_points: int = 3000,
                seed: int = 0) -> dict[str, Any]:
    """A sound N-D mode count that needs no true parameters: mean-shift with a kNN bandwidth.

    The bandwidth is ``bandwidth_factor`` times the median distance to the ``n_neighbors``-th
    neighbour, so it adapts to the data's scale and to tight components; modes holding less than
    ``min_share`` of the points are ignored as noise.
    """
    from sklearn.cluster import MeanShift
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if len(x) > max_points:
        x = x[np.random.default_rng(seed).choice(len(x), max_points, replace=False)]
    k = min(n_neighbors, len(x) - 1)
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    bandwidth = float(bandwidth_factor * np.median(dist[:, -1]))
    if bandwidth <= 0:
        return {"count": 1, "centres": x[:1].tolist(), "bandwidth": bandwidth}
    ms = MeanShift(bandwidth=bandwidth, bin_seeding=True).fit(x)
    counts = np.bincount(ms.labels_, minlength=len(ms.cluster_centers_))
    keep = counts >= min_share * len(x)
    return {"count": int(keep.sum()), "centres": ms.cluster_centers_[keep].tolist(),
            "bandwidth": bandwidth}


# --------------------------------------------------------------------------------- coverage


def perfect_hq_fraction(dim: int, threshold: float = 3.0) -> float:
    """The high-quality share of a perfect sampler: P(chi2_D <= threshold^2)."""
    return float(chi2.cdf(threshold**2, df=dim))


_COVERAGE_CHUNK = 200_000


def mode_coverage(samples: np.ndarray, gmm: GMM, threshold: float = 3.0,
                  min_share: float = 0.01) -> dict[str, Any]:
    """Which true components the samples cover, and how faithfully.

    Each sample is assigned to its nearest component in Mahalanobis distance. It is *high
    quality* when that distance is at most ``threshold``. A component is *captured* when it gets
    at least ``min_share`` of the high-quality samples. ``weights_tv`` is the total-variation
    distance between the true weights and the shares of high-quality samples per component.
    ``median_fraction`` is the share of samples inside the median ellipsoid of their component
    (chi2_D median): 0.5 for a calibrated sampler, near 1 for one that is too concentrated.
    """
    samples = np.asarray(samples, dtype=np.float64)
    k, d = gmm.n_components, gmm.dim
    nearest = np.empty(len(samples), dtype=np.int64)
    best = np.empty(len(samples))
    # In chunks, so a million samples against many components never holds an (N, K) matrix.
    chunk = rows_per_chunk(coverage_bytes_per_row(k, d), cap=_COVERAGE_CHUNK)
    for start in range(0, len(samples), chunk):
        m2 = gmm.mahalanobis_sq(samples[start:start + chunk])
        nearest[start:start + len(m2)] = m2.argmin(axis=1)
        best[start:start + len(m2)] = m2.min(axis=1)
    hq = best <= threshold**2
    counts = np.bincount(nearest[hq], minlength=k)
    shares = counts / max(1, counts.sum())
    captured = shares >= min_share
    perfect = perfect_hq_fraction(d, threshold)
    hq_fraction = float(hq.mean())
    return {
        "modes_captured": int(captured.sum()),
        "n_components": k,
        "hq_fraction": hq_fraction,
        "hq_perfect": perfect,
        "hq_ratio": hq_fraction / perfect,
        "weights_tv": float(0.5 * np.abs(shares - gmm.weights).sum()),
        "n_samples": len(samples),
        "median_fraction": float((best <= chi2.median(d)).mean()),
        "shares": shares.tolist(),
        "captured": captured.tolist(),
    }


# ------------------------------------------------------------------------ likelihood, distance


def heldout_nll(model_log_prob: np.ndarray, true_log_prob: np.ndarray) -> dict[str, float]:
    """Mean negative log-likelihoods (nats per point) of the model and of the truth, and the gap.

    ``gap = model - true`` is >= 0 in expectation (the truth is the best density there is, and
    the IWAE estimate is a lower bound on the model's log-likelihood); 0 is perfect.
    """
    model = -float(np.mean(model_log_prob))
    true = -float(np.mean(true_log_prob))
    return {"model": model, "true": true, "gap": model - true}


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, n_projections: int = 256,
                       seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between two point clouds (POT), in data units."""
    import ot

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(ot.sliced_wasserstein_distance(a, b, n_projections=n_projections, seed=seed))


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: report a non-finite number as null."""
    return value if math.isfinite(value) else None
