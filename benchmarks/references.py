"""Reference models for the fidelity benchmark, trained on the VAE's own data, scored by its code.

- ``GaussianMixture(K)`` (scikit-learn, full covariances, 5 inits): the right model class, so an
  upper bound on what any density model can reach on these data.
- A neural spline flow (zuko ``NSF``, 5 transforms of 64 hidden units: ~37k parameters where the
  default VAE has ~35k), trained by maximum likelihood for the VAE's number of epochs on the same
  normalised data: a generative model of about the same size and wall time that has no latent
  bottleneck to collapse.

Both return samples in data coordinates and test log-likelihoods, which
``benchmarks/fidelity.py`` scores with ``coverage.mode_coverage``, ``literature_protocol`` and
``metrics.heldout_nll`` exactly as it scores the VAE.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from gmm_vae.data.datamodule import GMMDataModule

FLOW_TRANSFORMS, FLOW_HIDDEN = 5, 64


@dataclass
class Fitted:
    """What the benchmark scores: samples (data coordinates), test log-density, cost."""

    name: str
    samples: np.ndarray
    test_log_prob: np.ndarray
    n_params: int
    wall_s: float


def gaussian_mixture(dm: GMMDataModule, n_samples: int, seed: int = 0) -> Fitted:
    """scikit-learn's GaussianMixture with the true K, fitted on the training points."""
    from sklearn.mixture import GaussianMixture

    start = time.perf_counter()
    k, d = dm.gmm.n_components, dm.gmm.dim
    fit = GaussianMixture(k, covariance_type="full", n_init=5, random_state=seed,
                          reg_covar=1e-9).fit(dm.x_train)
    samples = fit.sample(n_samples)[0]
    samples = samples[np.random.default_rng(seed).permutation(len(samples))]  # sample() sorts
    n_params = k * (d + d * (d + 1) // 2) + k - 1
    return Fitted("GaussianMixture(K)", samples, fit.score_samples(dm.x_test), n_params,
                  time.perf_counter() - start)


def spline_flow(dm: GMMDataModule, n_samples: int, epochs: int, seed: int = 0,
                lr: float = 2e-3) -> Fitted:
    """A zuko neural spline flow trained by maximum likelihood (Adam, cosine decay, batch 128)."""
    import zuko

    torch.manual_seed(seed)
    start = time.perf_counter()
    d = dm.gmm.dim
    flow = zuko.flows.NSF(features=d, transforms=FLOW_TRANSFORMS,
                          hidden_features=(FLOW_HIDDEN, FLOW_HIDDEN))
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    x = dm.t_train
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(dm.batch_size):
            loss = -flow().log_prob(x[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    scale = torch.from_numpy(dm.normalizer.scale)
    shift = torch.from_numpy(dm.normalizer.shift)
    with torch.no_grad():
        parts = [flow().sample((min(100_000, n_samples - i),)).double() * scale + shift
                 for i in range(0, n_samples, 100_000)]
        test = dm.t_test
        log_jac = float(torch.log(scale).sum())
        lp = flow().log_prob(test).double().numpy() - log_jac
    return Fitted("spline flow (zuko NSF)", torch.cat(parts).numpy(), lp,
                  sum(p.numel() for p in flow.parameters()), time.perf_counter() - start)
