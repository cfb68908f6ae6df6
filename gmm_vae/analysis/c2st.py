"""The classifier two-sample test (C2ST): can a classifier tell the samples from the truth?

The recipe of the simulation-based-inference benchmark (sbibm, Lueckmann et al. 2021): z-score
both sets by the truth's mean and standard deviation, train an MLP with two hidden layers of
10·D ReLU units (Adam; at most 256: ``hidden_units``) to tell them apart, and report its 5-fold
cross-validated accuracy on equal-sized sets: 0.5 = indistinguishable, 1 = every point given
away. It sees what the mode instruments cannot (a mode of the right weight but the wrong shape)
and misses what they see (one missing mode of many moves it by only 1/(2K)), so it is read
beside them.

Why a batched torch MLP rather than scikit-learn's ``MLPClassifier``: every fold, and the
noise-floor test, is the same small network on the same amount of data, so they train at once
as one model with a leading batch axis (``torch.baddbmm``); Adam is elementwise, so each
network's updates are exactly its own. scikit-learn's early stopping (a noisy validation
accuracy, patience 10 epochs) stopped a ring of 8 with every mode too wide at 0.54 where the
classifier reaches 0.68, and without it the test took 72 s (docs/metrics.md "C2ST").

**Stopping rule.** Each training fold holds out 10% as a validation set. Training goes in
rounds of 50 Adam steps (batches of 256: one pass over a 10,000-vs-10,000 training fold); after
each round every network's validation Brier score is measured and its best weights kept. A
network improves when its score falls below its best by ``tol`` plus ``tol_gain`` of what it
has gained over chance (0.25 - best). Training stops when no network has improved for
``patience`` rounds, or after ``max_rounds`` (300 up to D = 3, falling as 1/D above); each
network is then scored on its test fold with its best weights. Why so: on a ring of tight
modes 3x too wide the validation score creeps down for ~2,000 steps before the classifier finds
the modes' widths, so a small ``tol`` counted in steps, not epochs, keeps it going at any
sample size; a classifier that already tells the sets apart keeps sharpening its confidence
without changing its accuracy, and the rising bar stops it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Fewest samples per set: below this the 5 test folds hold under 40 points of each set, and
# the accuracy's noise (about 0.5 / sqrt(2n)) passes 0.025, the width of a verdict.
MIN_SAMPLES = 200
# The Brier score of a classifier that always answers 1/2.
CHANCE_BRIER = 0.25
# Points per set by default (sbibm: 10,000 vs 10,000).
DEFAULT_SAMPLES = 10_000


@dataclass(frozen=True)
class C2STSettings:
    """The classifier and its training (defaults: the measured choice, docs/metrics.md)."""

    folds: int = 5
    hidden_factor: int = 10  # hidden units per layer = hidden_factor * D ...
    max_hidden: int = 256  # ... at most this many (``hidden_units``)
    batch_size: int = 256
    lr: float = 1e-3
    round_steps: int = 50  # optimiser steps between two looks at the validation score
    max_rounds: int = 300  # at D <= 3; falls as 1/D above (``round_cap``)
    patience: int = 10  # rounds without an improvement of any watched network
    tol: float = 5e-5  # an improvement: a validation Brier score below best - tol ...
    tol_gain: float = 5e-3  # ... - tol_gain * (0.25 - best), the gain over chance
    validation: float = 0.1  # share of each training fold held out for the stopping rule
    # torch threads while training (None: as set). One: the matrices are small, and a second
    # thread that waits for a busy core made the 3-D test 10x slower (34 s instead of 3.4 s).
    threads: int | None = 1


def hidden_units(s: C2STSettings, dim: int) -> int:
    """Units per hidden layer: sbibm's 10·D, capped at ``max_hidden`` (from D = 26 on). A step of
    the uncapped network costs ~D² multiply-adds per point: in 200-D (2,000 units) its ten
    networks took 917 s of a 2-epoch run's evaluation; at 256 units the cost grows as D."""
    return max(1, min(s.hidden_factor * dim, s.max_hidden))


def round_cap(max_rounds: int, dim: int) -> int:
    """Rounds the stopping rule allows at dimension ``dim``: ``max_rounds`` up to D = 3, then
    falling as 1/D (45 at D = 20 for the default 300). A step of the 10·D-unit network costs
    about D² more, and learns more; the cap keeps a broken 20-D model's test near a minute."""
    return max(1, min(max_rounds, max_rounds * 3 // max(dim, 1)))


def _fold_split(n: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold index of each of ``n`` points of one set, shuffled, ``n // folds`` in each."""
    return rng.permutation(np.arange(n) % folds)


def _z_score(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both sets in the truth's (``b``'s) standard units, as sbibm does; a constant
    coordinate keeps unit scale instead of dividing by 0."""
    mean, std = b.mean(axis=0), b.std(axis=0, ddof=1)
    std = np.where(std > 0, std, 1.0)
    return (a - mean) / std, (b - mean) / std


def check_samples(samples: np.ndarray, truth: np.ndarray) -> None:
    """ValueError, in one line, when the two sets cannot be tested against each other."""
    if samples.ndim != 2 or truth.ndim != 2 or samples.shape[1] != truth.shape[1]:
        raise ValueError(f"C2ST needs two (n, D) arrays of the same D (got {samples.shape} "
                         f"and {truth.shape})")
    n = min(len(samples), len(truth))
    if n < MIN_SAMPLES:
        raise ValueError(f"C2ST needs at least {MIN_SAMPLES} samples of each set (got {n})")
    if not (np.isfinite(samples).all() and np.isfinite(truth).all()):
        raise ValueError("C2ST needs finite samples (drop the NaN/inf rows first)")


def c2st_many(pairs: Sequence[tuple[np.ndarray, np.ndarray]], seed: int = 0,
              settings: C2STSettings = C2STSettings(),
              deciding: int | None = None) -> list[dict[str, Any]]:
    """The C2ST of each ``(samples, truth)`` pair, all trained at once.

    Every pair is cut to the same ``n`` points per set (the smallest set, rounded down to a
    multiple of ``folds``), so the networks share one batch axis. Returns per pair:
    ``accuracy`` (the mean test accuracy over folds), ``fold_accuracies``, ``n_samples`` (per
    set) and ``steps`` (optimiser steps trained, the same for all pairs). ``deciding``: the
    first pairs whose networks the stopping rule watches (None: all); the others train
    exactly as long.
    """
    import torch

    for a, b in pairs:
        check_samples(a, b)
    s = settings
    rng = np.random.default_rng([seed, 2025])
    n = min(min(len(a), len(b)) for a, b in pairs)
    n -= n % s.folds
    dim = pairs[0][0].shape[1]
    # Per network (pair p, fold f): its training, validation and test points and labels.
    train_x, train_y, val_x, val_y, test_x, test_y = [], [], [], [], [], []
    for a, b in pairs:
        a, b = _z_score(a[:n], b[:n])
        x = np.concatenate([a, b])
        y = np.concatenate([np.ones(n), np.zeros(n)])  # 1 = the samples judged, 0 = truth
        fold = np.concatenate([_fold_split(n, s.folds, rng), _fold_split(n, s.folds, rng)])
        for f in range(s.folds):
            test = np.flatnonzero(fold == f)
            rest = rng.permutation(np.flatnonzero(fold != f))
            n_val = round(s.validation * len(rest))
            test_x.append(x[test])
            test_y.append(y[test])
            val_x.append(x[rest[:n_val]])
            val_y.append(y[rest[:n_val]])
            train_x.append(x[rest[n_val:]])
            train_y.append(y[rest[n_val:]])

    def stack(parts: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(parts)).float()

    xtr, ytr, xva, yva, xte, yte = map(stack, (train_x, train_y, val_x, val_y, test_x, test_y))
    previous_threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(int(s.threads))
    try:
        net = _BatchedMLP(len(xtr), dim, hidden_units(s, dim), seed)
        watched = len(xtr) if deciding is None else deciding * s.folds
        steps = net.fit(xtr, ytr, xva, yva, s, watched)
        with torch.no_grad():
            correct = ((net(xte) > 0).float() == yte).float().mean(dim=1).double().numpy()
    finally:
        torch.set_num_threads(previous_threads)
    out = []
    for p in range(len(pairs)):
        acc = correct[p * s.folds:(p + 1) * s.folds]
        out.append({"accuracy": float(acc.mean()), "fold_accuracies": acc.tolist(),
                    "n_samples": int(n), "steps": int(steps)})
    return out


def c2st(samples: np.ndarray, truth: np.ndarray, seed: int = 0,
         settings: C2STSettings = C2STSettings()) -> dict[str, Any]:
    """The C2ST of ``samples`` against ``truth`` (z-scored by the truth): ``c2st_many``'s
    result for one pair."""
    return c2st_many([(samples, truth)], seed, settings)[0]


def c2st_with_floor(samples: np.ndarray, truth: np.ndarray, truth2: np.ndarray, seed: int = 0,
                    settings: C2STSettings = C2STSettings(),
                    max_samples: int | None = DEFAULT_SAMPLES) -> dict[str, Any]:
    """``metrics.json``'s ``c2st``: the samples against the truth, and beside it the same test
    between two independent truth draws (``truth2`` against ``truth``), its noise floor.

    Both tests train together, so the floor's classifiers get exactly the training the
    model's got. Each set is cut to its first ``max_samples`` (sbibm's 10,000 vs 10,000):
    an evaluation on 100,000 samples (the fidelity suite's) then costs what a default one
    does, and its floor is the one the docs measure. ``accuracy`` and ``floor`` are NaN
    (null in the file) when fewer than ``MIN_SAMPLES`` finite samples are left.
    """
    if max_samples is not None:
        samples, truth, truth2 = (a[:max_samples] for a in (samples, truth, truth2))
    n = min(len(samples), len(truth), len(truth2))
    if n < MIN_SAMPLES:
        return {"accuracy": float("nan"), "floor": float("nan"), "n_samples": int(n),
                "steps": 0}
    # The model's networks decide when to stop (ten watched networks would go on for as long
    # as one of them still meets a record by chance); the floor's train exactly as long.
    model, floor = c2st_many([(samples, truth), (truth2, truth)], seed, settings, deciding=1)
    return {"accuracy": model["accuracy"], "floor": floor["accuracy"],
            "n_samples": model["n_samples"], "steps": model["steps"]}


class _BatchedMLP:
    """``m`` independent MLPs (D -> H -> H -> 1, ReLU) as stacked weight tensors.

    Initialised as ``torch.nn.Linear`` is (uniform in ±1/sqrt(fan_in)), from a generator of its
    own: the caller's random state is never touched.
    """

    def __init__(self, m: int, dim: int, hidden: int, seed: int) -> None:
        import torch

        gen = torch.Generator().manual_seed(int(seed) + 7919)
        sizes = [(dim, hidden), (hidden, hidden), (hidden, 1)]
        self.params: list[torch.Tensor] = []
        for fan_in, fan_out in sizes:
            bound = 1.0 / fan_in**0.5
            w = (torch.rand(m, fan_in, fan_out, generator=gen) * 2 - 1) * bound
            b = (torch.rand(m, 1, fan_out, generator=gen) * 2 - 1) * bound
            self.params += [w.requires_grad_(), b.requires_grad_()]
        self.gen = gen

    def __call__(self, x: Any) -> Any:
        """Logits, (m, B) for inputs (m, B, D)."""
        import torch

        w1, b1, w2, b2, w3, b3 = self.params
        h = torch.relu(torch.baddbmm(b1, x, w1))
        h = torch.relu(torch.baddbmm(b2, h, w2))
        return torch.baddbmm(b3, h, w3).squeeze(-1)

    def fit(self, xtr: Any, ytr: Any, xva: Any, yva: Any, s: C2STSettings, watched: int) -> int:
        """Adam on each network's mean log-loss, in rounds of ``s.round_steps`` steps, under
        the module's stopping rule on the first ``watched`` networks; ends with each network's
        best weights. Returns the optimiser steps taken."""
        import torch
        import torch.nn.functional as F

        opt = torch.optim.Adam(self.params, lr=s.lr, fused=True)  # one kernel per step
        m, n_train = ytr.shape
        best_loss = torch.full((m,), float("inf"))
        best = [p.detach().clone() for p in self.params]
        since_best, steps, pos = 0, 0, n_train
        xs = ys = xtr
        for _ in range(round_cap(s.max_rounds, xtr.shape[-1])):
            for _ in range(s.round_steps):
                if pos >= n_train:  # a new pass over the training points, reshuffled
                    order = torch.argsort(torch.rand(m, n_train, generator=self.gen), dim=1)
                    xs = torch.take_along_dim(xtr, order[..., None], dim=1)
                    ys = torch.take_along_dim(ytr, order, dim=1)
                    pos = 0
                logits = self(xs[:, pos:pos + s.batch_size])
                # Summed over networks, each term is one network's own mean: separate gradients.
                loss = F.binary_cross_entropy_with_logits(
                    logits, ys[:, pos:pos + s.batch_size], reduction="none").mean(dim=1).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                pos += s.batch_size
                steps += 1
            with torch.no_grad():
                val = ((torch.sigmoid(self(xva)) - yva) ** 2).mean(dim=1)  # Brier score
                # The bar rises with what a network has gained over chance (Brier 0.25): one that
                # tells the sets apart stops once it only sharpens its confidence.
                gained = (CHANCE_BRIER - best_loss).clamp(min=0.0).nan_to_num(0.0)
                improved = val < best_loss - (s.tol + s.tol_gain * gained)
                best_loss = torch.where(improved, val, best_loss)
                for keep, p in zip(best, self.params, strict=True):
                    mask = improved.view(-1, *([1] * (p.dim() - 1)))
                    keep.copy_(torch.where(mask, p, keep))
            since_best = 0 if bool(improved[:watched].any()) else since_best + 1
            if since_best >= s.patience:
                break
        with torch.no_grad():
            for keep, p in zip(best, self.params, strict=True):
                p.copy_(keep)
        return steps
