"""Reference models, first-class: ``python train.py model=gaussian_mixture`` / ``spline_flow``.

A VAE's numbers mean little alone; beside the right model class and a latent-free generative
model of its size they say how much of the gap is the VAE's. Both are fitted on the run's own
training points and judged by the VAE's own evaluation (``analysis.evaluation.evaluate_density``:
the sample instruments of ``evaluate_samples`` plus the held-out NLL, exact here where the
VAE's is an IWAE bound):

- ``gaussian_mixture``: scikit-learn's ``GaussianMixture`` with the true K (or
  ``model.reference_components``), full covariances, ``model.reference_inits`` EM starts. The
  right model class: an upper bound on what any density model reaches on these data.
- ``spline_flow``: a zuko neural spline flow (``model.flow_transforms`` transforms of
  ``model.flow_hidden`` units; 5 x 64 in ``conf/model/spline_flow.yaml``: 44.5k parameters in
  3-D where the default VAE has 36.4k) trained by maximum likelihood on the normalised training
  points for ``trainer.max_epochs`` epochs (Adam at ``model.lr``, cosine decay,
  ``data.batch_size``): a generative model of about the VAE's size with no latent bottleneck
  to collapse.

Neither needs Lightning; a fitted one is saved as a plain dict (``state``) and rebuilt by
``load_reference``, so ``evaluate.py run_dir=<reference run>`` re-scores it like a VAE run.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Protocol

import numpy as np
import torch

from gmm_vae.chunks import truth_draw_work
from gmm_vae.config import FAMILIES
from gmm_vae.data.gmm import GMM

REFERENCES = FAMILIES[1:]
LABELS = {"gaussian_mixture": "GaussianMixture(K)", "spline_flow": "spline flow (zuko NSF)"}
# EM's covariance floor: tiny, so the ring's std-0.01 components (variance 1e-4) keep their size.
REG_COVAR = 1e-9


class Reference(Protocol):
    """What the evaluation asks of a reference: samples, a density, their cost, a saved form."""

    family: str
    n_params: int
    dim: int

    def sample(self, n: int, seed: int) -> np.ndarray: ...
    def log_prob(self, x: np.ndarray) -> np.ndarray: ...
    def draw_work(self) -> float: ...
    def state(self) -> dict[str, Any]: ...


class GaussianMixtureReference:
    """A fitted mixture, kept as the project's own ``GMM`` (its sampler and exact density)."""

    family = "gaussian_mixture"

    def __init__(self, gmm: GMM) -> None:
        self.gmm = gmm
        k, d = gmm.n_components, gmm.dim
        self.dim = d
        self.n_params = k * (d + d * (d + 1) // 2) + k - 1

    @classmethod
    def fit(cls, x_train: np.ndarray, n_components: int, n_init: int,
            seed: int) -> GaussianMixtureReference:
        from sklearn.mixture import GaussianMixture

        fit = GaussianMixture(n_components, covariance_type="full", n_init=n_init,
                              random_state=seed, reg_covar=REG_COVAR).fit(x_train)
        return cls(GMM(fit.means_, fit.covariances_, fit.weights_ / fit.weights_.sum()))

    def sample(self, n: int, seed: int) -> np.ndarray:
        return self.gmm.sample(n, np.random.default_rng([seed, 95]))[0]

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        return self.gmm.log_prob(x)

    def draw_work(self) -> float:
        return truth_draw_work(self.gmm.n_components, self.dim)

    def state(self) -> dict[str, Any]:
        return {"family": self.family, "gmm": self.gmm.to_dict()}


class SplineFlowReference(torch.nn.Module):
    """A zuko NSF on normalised data; ``sample`` and ``log_prob`` speak data coordinates."""

    family = "spline_flow"

    def __init__(self, dim: int, transforms: int, hidden: int, shift: np.ndarray,
                 scale: np.ndarray) -> None:
        import zuko

        super().__init__()
        self.dim, self.transforms, self.hidden = dim, transforms, hidden
        self.flow = zuko.flows.NSF(features=dim, transforms=transforms,
                                   hidden_features=(hidden, hidden))
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float64))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float64))
        self.n_params = sum(p.numel() for p in self.flow.parameters())

    def fit(self, x_norm: torch.Tensor, epochs: int, batch_size: int, lr: float,
            seed: int) -> list[float]:
        """Maximum likelihood on ``x_norm``; returns the mean training NLL of every epoch.
        A line on stderr every tenth of the epochs: a 20-D flow trains for minutes."""
        torch.manual_seed(seed)
        opt = torch.optim.Adam(self.flow.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        gen = torch.Generator().manual_seed(seed)
        losses: list[float] = []
        started, every = time.perf_counter(), max(1, epochs // 10)
        for epoch in range(epochs):
            total, n = 0.0, 0
            for idx in torch.randperm(len(x_norm), generator=gen).split(batch_size):
                loss = -self.flow().log_prob(x_norm[idx]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, n = total + float(loss.detach()) * len(idx), n + len(idx)
            sched.step()
            losses.append(total / n)
            if (epoch + 1) % every == 0 or epoch + 1 == epochs:
                print(f"spline_flow: epoch {epoch + 1}/{epochs}  nll {losses[-1]:.4f}  "
                      f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(f"the spline flow diverged at epoch {epoch + 1} "
                                         f"(training NLL {losses[-1]}); lower model.lr")
        return losses

    @torch.no_grad()
    def sample(self, n: int, seed: int, chunk: int = 100_000) -> np.ndarray:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            parts = [self.flow().sample((min(chunk, n - i),)).double() * self.scale + self.shift
                     for i in range(0, n, chunk)]
        return torch.cat(parts).numpy() if parts else np.empty((0, self.dim))

    @torch.no_grad()
    def log_prob(self, x: np.ndarray, chunk: int = 100_000) -> np.ndarray:
        x = torch.as_tensor(np.asarray(x), dtype=torch.float64)
        z = ((x - self.shift) / self.scale).float()
        lp = torch.cat([self.flow().log_prob(z[i:i + chunk]).double()
                        for i in range(0, len(z), chunk)])
        return (lp - torch.log(self.scale).sum()).numpy()

    def draw_work(self) -> float:
        # Sampling inverts each autoregressive transform one dimension at a time: D passes.
        return float(self.dim * self.n_params)

    def state(self) -> dict[str, Any]:
        return {"family": self.family, "dim": self.dim, "transforms": self.transforms,
                "hidden": self.hidden, "weights": self.state_dict()}


def fit_reference(model_cfg: Any, dm: Any, epochs: int, seed: int) -> Reference:
    """Fit ``model_cfg.family`` on the data module's training points (data coordinates for
    the mixture, the VAE's normalised coordinates for the flow)."""
    family = str(model_cfg.family)
    if family == "gaussian_mixture":
        k = model_cfg.reference_components or dm.gmm.n_components
        return GaussianMixtureReference.fit(dm.x_train, int(k), int(model_cfg.reference_inits),
                                            seed)
    if family == "spline_flow":
        flow = SplineFlowReference(dm.gmm.dim, int(model_cfg.flow_transforms),
                                   int(model_cfg.flow_hidden), dm.normalizer.shift,
                                   dm.normalizer.scale)
        flow.fit(dm.t_train.float().cpu(), epochs, int(dm.batch_size), float(model_cfg.lr),
                 seed)
        return flow.eval()
    raise ValueError(f"not a reference model family: {family!r} (one of {REFERENCES})")


def load_reference(state: dict[str, Any]) -> Reference:
    """A reference rebuilt from its ``state()``."""
    if state.get("family") == "gaussian_mixture":
        g = state["gmm"]
        return GaussianMixtureReference(GMM(np.asarray(g["means"]), np.asarray(g["covariances"]),
                                            np.asarray(g["weights"])))
    if state.get("family") == "spline_flow":
        weights = state["weights"]
        flow = SplineFlowReference(int(state["dim"]), int(state["transforms"]),
                                   int(state["hidden"]), weights["shift"].numpy(),
                                   weights["scale"].numpy())
        flow.load_state_dict(weights)
        return flow.eval()
    raise ValueError(f"not a saved reference model (family {state.get('family')!r})")
