"""The ground truth: a Gaussian mixture with exact sampling, log-density and labels.

Everything here is NumPy so the metrics can use it without a model or a device. The mixture is
the reference every number in the project is measured against, so it is immutable and is
written to every run directory (``gmm.yaml``) in the same format a user can feed back in with
``data.spec_path``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from scipy.special import logsumexp
from scipy.stats import special_ortho_group

from gmm_vae.chunks import rows_per_chunk
from gmm_vae.errors import ConfigError
from gmm_vae.io import atomic_write_text

# Covariances must be numerically SPD: the smallest eigenvalue relative to the largest.
_SPD_RTOL = 1e-10


@dataclass(frozen=True, eq=False)
class GMM:
    """A K-component Gaussian mixture in D dimensions, in data coordinates.

    Attributes:
        means: (K, D) component means.
        covariances: (K, D, D) symmetric positive-definite covariances.
        weights: (K,) mixing weights, non-negative and summing to 1.
    """

    means: np.ndarray
    covariances: np.ndarray
    weights: np.ndarray
    _chol: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        means = np.atleast_2d(np.asarray(self.means, dtype=np.float64))
        covs = np.asarray(self.covariances, dtype=np.float64)
        weights = np.atleast_1d(np.asarray(self.weights, dtype=np.float64))
        validate_parameters(means, covs, weights, source="gmm")
        for name, value in (("means", means), ("covariances", covs), ("weights", weights)):
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        chol = np.linalg.cholesky(covs)
        chol.setflags(write=False)
        object.__setattr__(self, "_chol", chol)

    # ------------------------------------------------------------------ shape
    @property
    def n_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    # --------------------------------------------------------------- sampling
    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` points and the index of the component each came from.

        The affine map runs in row chunks: ``chol[labels]`` is (n, D, D), 20 GB for a million
        50-d points at once. The draws come first and whole, so the points do not depend on it.
        """
        labels = rng.choice(self.n_components, size=n, p=self.weights)
        eps = rng.standard_normal((n, self.dim))
        chol = self._chol
        x = np.empty((n, self.dim))
        rows = rows_per_chunk(2.0 * 8 * self.dim * (self.dim + 1), cap=max(1, n))
        for s in range(0, n, rows):
            lab = labels[s:s + rows]
            x[s:s + rows] = self.means[lab] + np.einsum("nij,nj->ni", chol[lab], eps[s:s + rows])
        return x, labels.astype(np.int64)

    # ---------------------------------------------------------------- density
    def component_log_probs(self, x: np.ndarray) -> np.ndarray:
        """(N, K) log N(x | mu_k, Sigma_k), without the mixing weights."""
        maha2 = self.mahalanobis_sq(x)
        chol = self._chol
        log_det = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
        return -0.5 * (maha2 + log_det[None, :] + self.dim * math.log(2.0 * math.pi))

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """(N,) exact log-density of the mixture, in nats, in data coordinates."""
        return logsumexp(self.component_log_probs(x) + np.log(self.weights)[None, :], axis=1)

    def mahalanobis_sq(self, x: np.ndarray) -> np.ndarray:
        """(N, K) squared Mahalanobis distance of each point to each component."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        chol = self._chol
        out = np.empty((x.shape[0], self.n_components))
        for k in range(self.n_components):
            diff = (x - self.means[k]).T  # (D, N)
            sol = np.linalg.solve(chol[k], diff)  # L^{-1} (x - mu)
            out[:, k] = np.einsum("dn,dn->n", sol, sol)
        return out

    def responsibilities(self, x: np.ndarray) -> np.ndarray:
        """(N, K) posterior probability of each component given each point."""
        joint = self.component_log_probs(x) + np.log(self.weights)[None, :]
        return np.exp(joint - logsumexp(joint, axis=1, keepdims=True))

    # --------------------------------------------------------------------- io
    def to_dict(self) -> dict[str, list]:
        return {
            "means": self.means.tolist(),
            "covariances": self.covariances.tolist(),
            "weights": self.weights.tolist(),
        }

    def to_yaml(self, path: str | Path) -> None:
        """Write the mixture as a spec file (atomically: never a half-written file)."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
        atomic_write_text(Path(path), text)

    @classmethod
    def from_yaml(cls, path: str | Path) -> GMM:
        """Load a spec file with keys ``means`` (KxD), ``covariances`` (KxDxD), ``weights`` (K)."""
        path = Path(path)
        setting = "data.spec_path"
        if not path.is_file():
            raise ConfigError(f"{setting} must name an existing YAML file (got '{path}')")
        try:
            spec = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            where = f" at line {line + 1}" if line is not None else ""
            raise ConfigError(f"{setting}: '{path}' is not valid YAML{where}") from None
        if not isinstance(spec, dict):
            raise ConfigError(
                f"{setting}: '{path}' must hold a mapping with keys means, covariances, weights"
            )
        missing = [k for k in ("means", "covariances", "weights") if k not in spec]
        unknown = sorted(set(spec) - {"means", "covariances", "weights"})
        if missing:
            raise ConfigError(f"{setting}: '{path}' is missing key(s) {', '.join(missing)}")
        if unknown:
            raise ConfigError(
                f"{setting}: '{path}' has unknown key(s) {', '.join(map(str, unknown))}; "
                "allowed: means, covariances, weights"
            )
        arrays = {}
        for key in ("means", "covariances", "weights"):
            try:
                arrays[key] = np.asarray(spec[key], dtype=np.float64)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{setting}: '{path}' key '{key}' must be a (nested) list of numbers"
                ) from None
        validate_parameters(
            np.atleast_2d(arrays["means"]),
            arrays["covariances"],
            np.atleast_1d(arrays["weights"]),
            source=f"{setting} '{path}'",
        )
        return cls(arrays["means"], arrays["covariances"], arrays["weights"])

    # ----------------------------------------------------------------- random
    @classmethod
    def random(
        cls,
        n_components: int,
        dim: int,
        seed: int,
        mean_spread: float = 4.0,
        scale_range: tuple[float, float] = (0.4, 1.0),
        weight_concentration: float = 5.0,
        min_separation: float = 2.0,
    ) -> GMM:
        """A random mixture, fully determined by ``seed``.

        Means are drawn from N(0, mean_spread^2 I) and re-drawn until every pair of components is at
        least ``min_separation`` x (sum of their largest standard deviations) apart, so components
        are distinct yet their tails may overlap. Each covariance is R diag(s^2) R^T with a
        uniformly random rotation R and standard deviations s uniform in ``scale_range``. Weights
        are Dirichlet(weight_concentration): large values give near-equal weights.
        """
        rng = np.random.default_rng(seed)
        lo, hi = scale_range
        scales = rng.uniform(lo, hi, size=(n_components, dim))
        if dim == 1:
            rotations = np.ones((n_components, 1, 1))
        else:
            rotations = special_ortho_group.rvs(dim, size=n_components, random_state=rng)
            rotations = np.asarray(rotations).reshape(n_components, dim, dim)
        covs = np.einsum("kij,kj,klj->kil", rotations, scales**2, rotations)
        covs = 0.5 * (covs + np.transpose(covs, (0, 2, 1)))
        reach = scales.max(axis=1)
        means = np.empty((n_components, dim))
        for k in range(n_components):
            for _attempt in range(1000):
                candidate = rng.normal(0.0, mean_spread, size=dim)
                gaps = np.linalg.norm(means[:k] - candidate, axis=1)
                if np.all(gaps >= min_separation * (reach[:k] + reach[k])):
                    break
                # Widen slowly so crowded settings (many components, low D) still terminate.
                mean_spread *= 1.01
            means[k] = candidate
        weights = rng.dirichlet(np.full(n_components, weight_concentration))
        return cls(means, covs, weights)


def validate_parameters(
    means: np.ndarray, covariances: np.ndarray, weights: np.ndarray, source: str
) -> None:
    """Raise a one-line ConfigError if the arrays do not describe a valid mixture."""
    if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
        raise ConfigError(f"{source}: means must be a K x D list with K, D >= 1 (got shape "
                          f"{list(means.shape)})")
    k, d = means.shape
    if covariances.shape != (k, d, d):
        raise ConfigError(
            f"{source}: covariances must have shape K x D x D = {[k, d, d]} to match means "
            f"(got {list(covariances.shape)})"
        )
    if weights.shape != (k,):
        raise ConfigError(
            f"{source}: weights must be a list of K = {k} numbers (got shape {list(weights.shape)})"
        )
    for name, arr in (("means", means), ("covariances", covariances), ("weights", weights)):
        if not np.all(np.isfinite(arr)):
            raise ConfigError(f"{source}: {name} must be finite numbers")
    if np.any(weights < 0):
        raise ConfigError(f"{source}: weights must be non-negative (got {weights.tolist()})")
    if abs(weights.sum() - 1.0) > 1e-6:
        raise ConfigError(f"{source}: weights must sum to 1 (got sum {weights.sum():.6g})")
    for i, cov in enumerate(covariances):
        if not np.allclose(cov, cov.T, rtol=1e-8, atol=1e-10):
            raise ConfigError(f"{source}: covariances[{i}] must be symmetric")
        eig = np.linalg.eigvalsh(cov)
        if eig.min() <= _SPD_RTOL * max(eig.max(), 0.0) or eig.max() <= 0:
            raise ConfigError(
                f"{source}: covariances[{i}] must be positive-definite "
                f"(smallest eigenvalue {eig.min():.3g})"
            )
