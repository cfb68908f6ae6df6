"""Pins for the Lightning internals the fast training step relies on.

``VAEModule.training_step`` skips Lightning's ``manual_backward`` / ``LightningOptimizer.step``
on one device in 32-bit (they cost more than this model's maths, docs/performance.md) and
reaches into three private names instead. Each test below fails if a Lightning upgrade changes
one of them, instead of letting the fast path silently switch off or the step counts silently
drift.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.loggers import Logger

from gmm_vae.data.datamodule import GMMDataModule, epoch_permutation
from gmm_vae.model.graphed_step import make_capturable
from gmm_vae.model.training import VAEModule
from gmm_vae.model.vae import VAE

# 512 points in batches of 64: 8 optimiser steps per epoch, in Lightning steps of 3, 3 and 2.
STEPS_PER_EPOCH, EPOCHS = 8, 2


class RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call: (metrics, step)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[dict[str, float], int | None]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.calls.append((dict(metrics), step))


class FastPathProbe(L.Callback):
    """Records, at every Lightning step, whether the model takes its plain (fast) step."""

    def __init__(self) -> None:
        self.fast: list[bool] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        self.fast.append(pl_module._plain_step_ok(pl_module.optimizers()))  # type: ignore


@pytest.fixture(scope="module")
def fitted() -> tuple[L.Trainer, VAEModule, RecordingLogger, FastPathProbe]:
    L.seed_everything(0, verbose=False)
    dm = GMMDataModule(n_samples=512, n_val=64, n_test=64, batch_size=64, steps_per_call=3)
    model = VAEModule(data_dim=3, hidden_dims=[8], prior="mog", prior_components=4)
    logger, probe = RecordingLogger(), FastPathProbe()
    trainer = L.Trainer(max_epochs=EPOCHS, accelerator="cpu", devices=1, logger=logger,
                        callbacks=[probe], log_every_n_steps=4, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    return trainer, model, logger, probe


def test_lightning_optimizer_has_the_progress_hooks_the_fast_step_calls(fitted) -> None:  # type: ignore[no-untyped-def]
    # The fast step calls these around optimizer.step(), as LightningOptimizer.step does; the
    # manual-optimisation loop sets them to count steps (global_step, tested below).
    opt = fitted[1].optimizers()
    assert isinstance(opt, LightningOptimizer)
    assert callable(opt._on_before_step) and callable(opt._on_after_step)


def test_fast_step_is_taken_on_one_cpu_device_in_32_bit(fitted) -> None:  # type: ignore[no-untyped-def]
    probe = fitted[3]
    assert probe.fast and all(probe.fast)


def test_global_step_counts_optimiser_steps_not_lightning_steps(fitted) -> None:  # type: ignore[no-untyped-def]
    trainer = fitted[0]
    assert trainer.global_step == STEPS_PER_EPOCH * EPOCHS  # 16, not 3 Lightning steps x 2


def test_logging_step_axis_is_in_optimiser_steps(fitted) -> None:  # type: ignore[no-untyped-def]
    trainer, _, logger, _ = fitted
    # The private counter _sync_logging_step advances: Lightning's x-axis for self.log values.
    loop = trainer.fit_loop.epoch_loop
    assert hasattr(loop, "_batches_that_stepped")
    assert loop._batches_that_stepped == trainer.global_step
    epoch_steps = [step for metrics, step in logger.calls if "train/loss" in metrics]
    assert epoch_steps == [STEPS_PER_EPOCH * (e + 1) - 1 for e in range(EPOCHS)]
    step_steps = [step for metrics, step in logger.calls if "train/loss_step" in metrics]
    # Step values go out after their step is counted: every 4th optimiser step, 4 to 16.
    assert step_steps == list(range(4, STEPS_PER_EPOCH * EPOCHS + 1, 4))


def test_cpu_training_never_builds_a_cuda_graph(fitted) -> None:  # type: ignore[no-untyped-def]
    model = fitted[1]
    assert model._graphed is None
    assert model._graphed_step(model.optimizers()) is None


def test_epoch_permutation_is_the_seeded_cpu_order() -> None:
    """The order every device uses is the one CPU runs have always used (reproducibility)."""
    g = torch.Generator().manual_seed(7 * 1_000_003 + 3)
    torch.testing.assert_close(epoch_permutation(100, seed=7, epoch=3), torch.randperm(100,
                                                                                      generator=g))
    assert not torch.equal(epoch_permutation(100, 7, 3), epoch_permutation(100, 7, 4))


def test_data_stays_where_it_is_on_cpu() -> None:
    dm = GMMDataModule(n_samples=64, n_val=16, n_test=16, batch_size=16)
    assert dm._on_device("t_train") is dm.t_train


def test_loss_terms_take_the_kl_weight_as_a_tensor() -> None:
    """The graph step passes the KL weight as a device tensor: same numbers as the float."""
    model = VAE(data_dim=3, hidden_dims=[8], prior="mog", prior_components=4)
    x = torch.randn(32, 3)
    torch.manual_seed(1)
    as_float = model.loss_terms(x, kl_weight=0.5)
    torch.manual_seed(1)
    as_tensor = model.loss_terms(x, kl_weight=torch.tensor(0.5))
    for k in as_float:
        torch.testing.assert_close(as_tensor[k], as_float[k], rtol=0, atol=0)


def test_a_capturable_optimisers_learning_rate_follows_the_schedule_in_place() -> None:
    """A replayed graph reads the lr tensor it captured: the scheduler must fill, not replace."""
    param = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.Adam([param], lr=0.1, fused=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    saved = opt.state_dict()
    opt.load_state_dict(saved)  # a checkpoint restores float lr and capturable=False
    make_capturable(opt, torch.device("cpu"))
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and opt.param_groups[0]["capturable"]
    param.grad = torch.zeros(3)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] is lr
    assert float(lr) == pytest.approx(0.1 * (1 + torch.cos(torch.tensor(torch.pi / 4))) / 2)
