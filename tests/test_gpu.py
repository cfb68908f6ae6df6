"""The CUDA-graph training step equals the eager step (skipped without a GPU, e.g. in CI).

Unverified so far: written without a GPU; run ``python -m pytest -q tests/test_gpu.py -n 0`` on a
machine with one before trusting the graph path's numbers.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch

from gmm_vae.data.datamodule import GMMDataModule
from gmm_vae.model.graphed_step import WARMUP_STEPS, GraphedStep
from gmm_vae.model.training import VAEModule
from gmm_vae.model.vae import VAE

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = torch.device("cuda")


def _model(seed: int = 0, **kwargs: object) -> VAEModule:
    torch.manual_seed(seed)
    return VAEModule(data_dim=3, hidden_dims=[32, 32], prior="mog", prior_components=8,
                     **kwargs).to(CUDA)  # type: ignore[arg-type]


def _batches(n_steps: int) -> list[torch.Tensor]:
    """Mini-batches of 64 with a batch of 16 every 5th step: two shapes, two graphs."""
    g = torch.Generator().manual_seed(1)
    return [torch.randn(16 if i % 5 == 4 else 64, 3, generator=g).to(CUDA)
            for i in range(n_steps)]


@pytest.fixture
def no_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    """z = posterior mean: the comparison tests the maths, not the RNG streams."""
    monkeypatch.setattr(VAE, "reparameterize", staticmethod(lambda mean, log_var: mean))


def test_graphed_steps_give_the_eager_losses_and_weights(no_noise: None) -> None:
    eager, graphed = _model(), _model()
    opt_e = torch.optim.Adam(eager.parameters(), lr=2e-3, fused=True)
    opt_g = torch.optim.Adam(graphed.parameters(), lr=2e-3, fused=True)
    step = GraphedStep(graphed._stacked_terms, opt_g, CUDA)
    for i, x in enumerate(_batches(40)):
        terms = eager.vae.loss_terms(x)
        opt_e.zero_grad(set_to_none=True)
        terms["loss"].backward()
        opt_e.step()
        if i == 30:  # captured by now: from here on no step may sync the host
            torch.cuda.set_sync_debug_mode("error")
        try:
            out = step.step(x, 1.0)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        expected = torch.stack([terms[k].detach() for k in ("loss", "recon", "kl")])
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert step.n_graphs == 2
    for (name, p_e), p_g in zip(eager.named_parameters(), graphed.parameters(), strict=True):
        torch.testing.assert_close(p_g, p_e, rtol=1e-4, atol=1e-5, msg=name)


def test_replays_read_the_current_kl_weight_and_learning_rate(no_noise: None) -> None:
    eager, graphed = _model(), _model()
    opt_e = torch.optim.Adam(eager.parameters(), lr=2e-3, fused=True)
    opt_g = torch.optim.Adam(graphed.parameters(), lr=2e-3, fused=True)
    sched_e = torch.optim.lr_scheduler.CosineAnnealingLR(opt_e, T_max=4)
    sched_g = torch.optim.lr_scheduler.CosineAnnealingLR(opt_g, T_max=4)
    step = GraphedStep(graphed._stacked_terms, opt_g, CUDA)
    x = _batches(1)[0]
    for epoch in range(4):
        weight = (epoch + 1) / 4
        for _ in range(WARMUP_STEPS + 2):
            terms = eager.vae.loss_terms(x, kl_weight=weight)
            opt_e.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt_e.step()
            out = step.step(x, weight)
            torch.testing.assert_close(out[0], terms["loss"].detach(), rtol=1e-4, atol=1e-5)
        sched_e.step()
        sched_g.step()


def test_fit_on_gpu_matches_between_graphed_and_eager_steps() -> None:
    """Two epochs of trainer.fit, graphed or not, end at the same loss (same RNG streams)."""
    losses = {}
    for graphs in (True, False):
        L.seed_everything(0, verbose=False)
        dm = GMMDataModule(n_samples=1000, n_val=200, n_test=200, batch_size=64)
        model = VAEModule(data_dim=3, hidden_dims=[32, 32], prior="mog", prior_components=8,
                          lr_schedule="cosine", kl_warmup_epochs=2, cuda_graphs=graphs)
        trainer = L.Trainer(max_epochs=2, accelerator="gpu", devices=1, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False)
        trainer.fit(model, datamodule=dm)
        losses[graphs] = float(trainer.callback_metrics["train/loss"])
        assert trainer.global_step == 2 * 16  # 1000 points / 64 = 16 steps per epoch
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)
