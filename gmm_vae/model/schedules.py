"""Training schedules as pure functions of the epoch: KL weight, variance ceiling, refits, lr.

The training module and ``benchmarks/collapse_probe.py`` call these, so the probe's training is
the run's training, and each schedule can be checked at given epochs without a Trainer.
Epochs are 0-based: epoch ``e`` is the (e + 1)-th pass over the data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


def kl_weight(epoch: int, beta: float, warmup_epochs: int) -> float:
    """beta during epoch ``epoch``: ramped linearly over the first ``warmup_epochs`` epochs.

    Epoch 0 already has a weight of beta / warmup (never exactly 0, so the posterior is pulled
    towards the prior from the start); from epoch ``warmup_epochs - 1`` on, beta itself.
    """
    if warmup_epochs <= 0:
        return float(beta)
    return float(beta) * min(1.0, (epoch + 1) / warmup_epochs)


def log_var_ceiling(epoch: int, init_log_var: float, warmup_epochs: int) -> float:
    """The cap on p(x|z)'s log-variance during epoch ``epoch``.

    Rises linearly from ``init_log_var`` to 0 (the variance of standardised data) over
    ``warmup_epochs``, then lifts (infinity: only the model's own bound is left). Capped,
    p(x|z) cannot explain a direction of the data as noise before the encoder has learned it:
    with learned variance that is a stable dead end (docs/fidelity.md, "Posterior collapse on the
    ring").
    """
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return math.inf
    return init_log_var + (0.0 - init_log_var) * epoch / warmup_epochs


def prior_refit_due(epoch: int, every: int, kl_warmup_epochs: int,
                    max_epochs: int | None) -> bool:
    """Whether the mixture prior is refitted by EM after epoch ``epoch``.

    Every ``every`` epochs once the KL warm-up is over (before, the posteriors are still being
    shaped with little pull from the prior), and after the last epoch, so that the prior a run
    ends with, and its last.ckpt, is the refitted one. ``every`` <= 0: never.
    """
    if every <= 0:
        return False
    done = epoch + 1
    if max_epochs is not None and done == max_epochs:
        return True
    warm = max(1, int(kl_warmup_epochs))
    return done >= warm and (done - warm) % every == 0


@dataclass(frozen=True)
class CosineSegment:
    """The learning rate's cosine decay: lr(e) = base * (1 + cos(pi * phase(e))) / 2.

    The phase goes linearly from ``start_phase`` at ``start_epoch`` to 1 at ``end_epoch``, and
    stays at 1 after. A fresh run is the segment (0, 0.0, max_epochs): torch's
    ``CosineAnnealingLR`` with ``T_max = max_epochs``. Extending a run (``extended``) starts a
    new segment where the old one stands, so the rate keeps falling and never rises again.
    """

    start_epoch: int
    start_phase: float
    end_epoch: int

    def phase(self, epoch: int) -> float:
        span = self.end_epoch - self.start_epoch
        if span <= 0 or epoch >= self.end_epoch:
            return 1.0
        done = max(0, epoch - self.start_epoch) / span
        return self.start_phase + (1.0 - self.start_phase) * done

    def factor(self, epoch: int) -> float:
        """lr(epoch) / base lr, in [0, 1], non-increasing in the epoch."""
        return 0.5 * (1.0 + math.cos(math.pi * self.phase(epoch)))

    def extended(self, at_epoch: int, end_epoch: int) -> CosineSegment:
        """The schedule of a run resumed at ``at_epoch`` with a new ``end_epoch``.

        The phase reached at ``at_epoch`` is kept and the rest of the decay is spread over the
        epochs left: a run stopped half-way and extended to twice its length continues from
        the rate it had, decaying to 0 at the new end. A run that had finished its decay stays
        at 0 (``annealed``): continuing it cannot change its weights.
        """
        if end_epoch == self.end_epoch:
            return self
        return CosineSegment(at_epoch, self.phase(at_epoch), end_epoch)

    def annealed(self, epoch: int) -> bool:
        """Whether the rate has reached 0 by ``epoch``."""
        return self.phase(epoch) >= 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> CosineSegment:
        return cls(int(state["start_epoch"]), float(state["start_phase"]),
                   int(state["end_epoch"]))
