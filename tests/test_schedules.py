"""The training schedules at given epochs: the warm-ups that fixed the ring's collapse, the prior
refits, and what a training run actually applies."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import pytest

from gmm_vae.model import schedules
from gmm_vae.runs.pipeline import build_callbacks, build_datamodule, build_model, build_trainer
from tests.conftest import TINY, compose_config


@pytest.mark.parametrize(("epoch", "weight"), [(0, 0.01), (49, 0.5), (98, 0.99), (99, 1.0),
                                               (250, 1.0)])
def test_kl_weight_ramps_linearly_over_the_warmup(epoch: int, weight: float) -> None:
    assert schedules.kl_weight(epoch, 1.0, 100) == pytest.approx(weight)


def test_kl_weight_scales_with_beta_and_no_warmup_is_beta() -> None:
    assert schedules.kl_weight(49, 4.0, 100) == pytest.approx(2.0)
    assert schedules.kl_weight(0, 0.5, 0) == 0.5


@pytest.mark.parametrize(("epoch", "ceiling"), [(0, -6.0), (25, -3.0), (49, -0.12),
                                                (50, math.inf), (299, math.inf)])
def test_variance_ceiling_rises_from_the_initial_log_variance_to_zero(
        epoch: int, ceiling: float) -> None:
    assert schedules.log_var_ceiling(epoch, -6.0, 50) == pytest.approx(ceiling)


def test_no_variance_warmup_means_no_ceiling() -> None:
    assert schedules.log_var_ceiling(0, -6.0, 0) == math.inf


def test_prior_refits_follow_the_kl_warmup_and_end_the_run() -> None:
    due = [e for e in range(300) if schedules.prior_refit_due(e, 25, 100, 300)]
    # After epochs 100, 125, ..., 300 (1-based): 8 refits after the warm-up, 1 at the end.
    assert due == [99, 124, 149, 174, 199, 224, 249, 274, 299]
    assert not any(schedules.prior_refit_due(e, 0, 100, 300) for e in range(300))
    # No KL warm-up: every ``every`` epochs from the first.
    assert [e for e in range(10) if schedules.prior_refit_due(e, 3, 0, None)] == [0, 3, 6, 9]


def test_a_training_run_applies_the_schedules_epoch_by_epoch(tmp_path: Any) -> None:
    """What the module does each epoch is the schedules' value for that epoch."""
    cfg = compose_config([*TINY, "analysis.every_n_epochs=0", "analysis.evaluate_at_end=false",
                          "trainer.max_epochs=6", "model.kl_warmup_epochs=4",
                          "model.decoder_var_warmup_epochs=3", "model.beta=2.0"])
    dm = build_datamodule(cfg)
    model = build_model(cfg, dm)
    seen: dict[int, tuple[float, float, float]] = {}

    class Watch(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            seen[trainer.current_epoch] = (module.kl_weight(), float(module.vae.log_var_ceiling),
                                           float(lr))

    trainer = build_trainer(cfg, tmp_path, [*build_callbacks(cfg, tmp_path), Watch()])
    trainer.fit(model, datamodule=dm)
    for epoch, (weight, ceiling, lr) in seen.items():
        assert weight == pytest.approx(schedules.kl_weight(epoch, 2.0, 4))
        expected = min(6.0, schedules.log_var_ceiling(epoch, -6.0, 3))
        assert ceiling == pytest.approx(expected)
        assert lr == pytest.approx(2e-3 * schedules.CosineSegment(0, 0.0, 6).factor(epoch))
    assert sorted(seen) == list(range(6))
    assert float(model.vae.log_var_ceiling) == 6.0  # lifted after training, for sampling
