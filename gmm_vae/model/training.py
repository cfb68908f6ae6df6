"""The LightningModule that trains a ``model.VAE``: steps, schedules, optimiser, checkpoints.

The VAE itself (networks, ELBO, sampling, log-density) is the plain module ``self.vae``; this
layer holds only what training adds to it: one manual Adam step per mini-batch (with a fast path
past Lightning's wrappers and a CUDA-graph step), the epoch sums that are logged, the
schedules of ``gmm_vae.model.schedules`` applied epoch by epoch, the prior refits, and the learning
rate's segment saved in every checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch

from gmm_vae.model import schedules
from gmm_vae.model.checkpoints import (
    LR_SEGMENT_KEY,
    as_lambda_state,
    checkpoint_lr_segment,
    upgraded_state_dict,
)
from gmm_vae.model.graphed_step import GraphedStep
from gmm_vae.model.vae import VAE

_TERMS = ("loss", "recon", "kl")
# Priors whose log-density has no data-dependent host control flow, so a CUDA graph can hold
# it (the mixture builds its torch.distributions without argument validation for this reason).
# The flow prior (zuko) is unverified under capture and keeps the eager step.
_GRAPH_SAFE_PRIORS = ("standard", "mog")


class VAEModule(L.LightningModule):
    """Trains ``self.vae``; the arguments are the VAE's and the training's, all recorded by
    ``save_hyperparameters`` (a checkpoint's ``hyper_parameters`` rebuild the module)."""

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 2,
        hidden_dims: Sequence[int] = (128, 128),
        likelihood: str = "gaussian",
        decoder_covariance: str = "diag",
        mse_reduction: str = "sum",
        prior: str = "standard",
        prior_components: int = 16,
        flow_transforms: int = 3,
        flow_hidden: int = 64,
        beta: float = 1.0,
        kl_warmup_epochs: int = 0,
        free_bits: float = 0.0,
        decoder_init_log_var: float = 0.0,
        decoder_var_warmup_epochs: int = 0,
        prior_refit_every: int = 0,
        lr: float = 2e-3,
        weight_decay: float = 0.0,
        lr_schedule: str = "none",
        gradient_clip_val: float | None = None,
        data_shift: Sequence[float] | None = None,
        data_scale: Sequence[float] | None = None,
        cuda_graphs: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # Manual optimisation: one backward and one Adam step per batch, without Lightning's
        # closure machinery, which costs more than this tiny model's maths
        # (docs/performance.md). Precision plugins and DDP still apply via manual_backward /
        # optimizers().
        self.automatic_optimization = False
        self._acc: dict[str, torch.Tensor | int] = {"count": 0}
        # The CUDA-graph step (gmm_vae.model.graphed_step), built at the first training step on
        # CUDA.
        self._graphed: GraphedStep | None = None
        # The learning rate's decay (schedules.CosineSegment), saved in every checkpoint, and
        # the one a resumed checkpoint brought, until training starts from it.
        self._lr_segment = schedules.CosineSegment(0, 0.0, 0)
        self._loaded_lr_segment: schedules.CosineSegment | None = None
        # The decoder's variance is capped only while its warm-up lasts.
        self.vae = VAE(data_dim=data_dim, latent_dim=latent_dim, hidden_dims=hidden_dims,
                       likelihood=likelihood, decoder_covariance=decoder_covariance,
                       mse_reduction=mse_reduction, prior=prior,
                       prior_components=prior_components, flow_transforms=flow_transforms,
                       flow_hidden=flow_hidden, free_bits=free_bits,
                       decoder_init_log_var=decoder_init_log_var,
                       cap_log_var=bool(decoder_var_warmup_epochs),
                       data_shift=data_shift, data_scale=data_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The VAE's reconstruction of normalised ``x`` through the posterior mean."""
        return self.vae(x)

    # ---------------------------------------------------------- schedules
    def kl_weight(self) -> float:
        """beta, ramped over the first ``kl_warmup_epochs`` epochs (``schedules.kl_weight``)."""
        if self._trainer is None:
            return float(self.hparams.beta)
        return schedules.kl_weight(self.current_epoch, self.hparams.beta,
                                   self.hparams.kl_warmup_epochs)

    def prior_refit_due(self, epoch: int) -> bool:
        """Whether the mixture prior is refitted by EM after epoch ``epoch`` (0-based):
        ``schedules.prior_refit_due`` with this run's interval, warm-up and length."""
        if not hasattr(self.vae.prior, "refit"):
            return False
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        return schedules.prior_refit_due(epoch, int(self.hparams.prior_refit_every),
                                         int(self.hparams.kl_warmup_epochs), max_epochs)

    # ---------------------------------------------------------- steps
    def training_step(self, batch: torch.Tensor | list[torch.Tensor],
                      batch_idx: int) -> torch.Tensor:
        """One optimiser step per mini-batch; ``batch`` may be a group of mini-batches.

        The data module hands over ``data.steps_per_call`` mini-batches per Lightning step, so
        Lightning's per-step bookkeeping is paid once per group instead of once per mini-batch
        (docs/performance.md). Each mini-batch still gets its own forward, backward and Adam
        step, exactly as if it had come alone.
        """
        batches = batch if isinstance(batch, list | tuple) else [batch]
        opt = self.optimizers()
        fast = self._plain_step_ok(opt)
        graphed = self._graphed_step(opt) if fast else None
        rows: list[torch.Tensor] = []
        for mini in batches:
            if graphed is not None:
                # CUDA: forward, backward and Adam replayed as one graph
                # (gmm_vae.model.graphed_step).
                step_terms = graphed.step(mini, self.kl_weight())
                opt._on_before_step()  # type: ignore[union-attr]
                opt._on_after_step()  # type: ignore[union-attr]
                rows.append(step_terms)
                self._log_step(step_terms)
                continue
            terms = self.vae.loss_terms(mini, self.kl_weight())
            opt.zero_grad(set_to_none=True)  # type: ignore[union-attr]
            if fast:
                # Single device, 32-bit, no clipping: Lightning's backward and step wrappers
                # would only forward to these calls; the progress hooks keep global_step right.
                terms["loss"].backward()
                opt._on_before_step()  # type: ignore[union-attr]
                opt.optimizer.step()  # type: ignore[union-attr]
                opt._on_after_step()  # type: ignore[union-attr]
            else:
                self.manual_backward(terms["loss"])
                if self.hparams.gradient_clip_val:
                    self.clip_gradients(opt, gradient_clip_val=self.hparams.gradient_clip_val,
                                        gradient_clip_algorithm="norm")
                opt.step()  # type: ignore[union-attr]
            rows.extend(terms[k] for k in _TERMS)
            self._log_step(rows[-3:])
        # (n_steps, 3): from 3n scalars on the eager path, from n (3,) rows on the graph path.
        stacked = torch.stack(rows).detach().view(len(batches), len(_TERMS))
        self._accumulate(stacked, [len(mini) for mini in batches])
        self._sync_logging_step(len(batches))
        # A NaN anywhere in the group makes the sum NaN: the guard sees it without a sync.
        return stacked[:, 0].sum()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log_dict({f"val/{k}": v for k, v in self._eval_terms(batch).items()},
                      on_epoch=True, prog_bar=True, batch_size=len(batch), sync_dist=True)

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log_dict({f"test/{k}": v for k, v in self._eval_terms(batch).items()},
                      batch_size=len(batch))

    def _eval_terms(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss_terms`` plus ``nelbo`` = recon + KL: the beta = 1 negative ELBO (nats).

        ``loss`` weighs the KL by the warm-up's current weight, so its value means something
        else every epoch of the warm-up; ``nelbo`` does not, and ``best.ckpt`` is chosen on it.
        """
        terms = self.vae.loss_terms(batch, self.kl_weight())
        terms["nelbo"] = terms["recon"] + terms["kl"]
        return terms

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        # The fused kernel does one pass over all parameters: ~3x faster than the default loop
        # for a model this small (measured on CPU; also used on CUDA).
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr,
                               weight_decay=self.hparams.weight_decay, fused=True)
        max_epochs = self._trainer.max_epochs if self._trainer is not None else None
        if self.hparams.lr_schedule == "cosine" and max_epochs:
            # A checkpoint being resumed brings its own segment (on_load_checkpoint).
            if self._loaded_lr_segment is None:
                self._lr_segment = schedules.CosineSegment(0, 0.0, int(max_epochs))
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda epoch: self._lr_segment.factor(epoch))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        return opt

    # ---------------------------------------------------- the fast step
    def _plain_step_ok(self, opt: object) -> bool:
        """Whether backward/step can skip Lightning's wrappers without changing the maths.

        True on one device in 32-bit precision without gradient clipping: there the wrappers
        add no scaling, no gradient sync and no clipping, only per-step overhead. Mixed
        precision, DDP and clipping keep ``manual_backward`` / ``LightningOptimizer.step``.
        """
        from lightning.pytorch.strategies import SingleDeviceStrategy

        trainer = self._trainer
        return bool(
            trainer is not None
            and isinstance(trainer.strategy, SingleDeviceStrategy)
            and str(trainer.precision) in ("32-true", "32")
            and not self.hparams.gradient_clip_val
            and hasattr(opt, "_on_before_step") and hasattr(opt, "_on_after_step")
        )

    def _graphed_step(self, opt: object) -> GraphedStep | None:
        """The CUDA-graph step when this run can use it (``model.cuda_graphs``), else None.

        Only called where ``_plain_step_ok`` holds (one device, 32-bit, no clipping), and only
        on CUDA with a prior that a graph can hold. A new optimiser (a new ``fit``) gets new
        graphs: captured graphs point at the old one's tensors.
        """
        if self.device.type != "cuda" or not self.hparams.get("cuda_graphs", True):
            return None
        if self.hparams.prior not in _GRAPH_SAFE_PRIORS:
            return None
        raw = opt.optimizer  # type: ignore[attr-defined]
        if self._graphed is None or self._graphed.optimizer is not raw:
            self._graphed = GraphedStep(self._stacked_terms, raw, self.device)
        return self._graphed

    def _stacked_terms(self, x: torch.Tensor, kl_weight: torch.Tensor) -> torch.Tensor:
        """``loss_terms`` as one ``(3,)`` tensor ``[loss, recon, kl]``, for the graph step."""
        terms = self.vae.loss_terms(x, kl_weight=kl_weight)
        return torch.stack([terms[k] for k in _TERMS])

    def _accumulate(self, stacked: torch.Tensor, sizes: list[int]) -> None:
        """Add a group's (n_steps, 3) terms, weighted by batch size, to the epoch sums.

        The sums stay on the device: no host sync per step. One set of tensor ops per group,
        not per mini-batch, keeps the bookkeeping small beside the maths.
        """
        n = sum(sizes)
        total = (stacked * stacked.new_tensor(sizes).unsqueeze(1)).sum(dim=0)
        acc = self._acc
        if acc["count"] == 0:
            acc["sum"], acc["count"] = total, n
        else:
            acc["sum"], acc["count"] = acc["sum"] + total, int(acc["count"]) + n

    def _log_step(self, terms: Sequence[torch.Tensor] | torch.Tensor) -> None:
        """Step values to the loggers every ``trainer.log_every_n_steps`` optimiser steps."""
        trainer = self._trainer
        every = trainer.log_every_n_steps if trainer is not None else 0
        if every and self.global_step % every == 0 and trainer.is_global_zero:
            values = {f"train/{k}_step": float(v.detach())
                      for k, v in zip(_TERMS, terms, strict=True)}
            for logger in self.loggers:
                logger.log_metrics(values, step=self.global_step)

    def _sync_logging_step(self, n_steps: int) -> None:
        """Keep Lightning's logging x-axis in optimiser steps when a call holds several."""
        trainer = self._trainer
        if trainer is None or n_steps <= 1:
            return
        loop = trainer.fit_loop.epoch_loop
        if hasattr(loop, "_batches_that_stepped"):
            loop._batches_that_stepped += n_steps - 1

    # ------------------------------------------------------------- hooks
    def on_train_start(self) -> None:
        """A resumed run with a new ``max_epochs`` continues its decay from where it stands."""
        scheduler = self.lr_schedulers()
        if scheduler is not None and self._loaded_lr_segment is not None:
            at = int(scheduler.last_epoch)  # type: ignore[union-attr]
            self._lr_segment = self._loaded_lr_segment.extended(at, int(self.trainer.max_epochs))
        self._loaded_lr_segment = None

    def on_train_epoch_start(self) -> None:
        hp = self.hparams
        self.vae.set_log_var_ceiling(schedules.log_var_ceiling(
            self.current_epoch, float(hp.decoder_init_log_var),
            int(hp.decoder_var_warmup_epochs)))

    def on_train_epoch_end(self) -> None:
        acc = self._acc
        if acc["count"]:
            means = acc["sum"] / acc["count"]
            self.log_dict({f"train/{k}": v for k, v in zip(_TERMS, means, strict=True)},
                          on_step=False, on_epoch=True, sync_dist=True)
            acc["count"] = 0
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()  # type: ignore[union-attr]
        if self.prior_refit_due(self.current_epoch):
            datamodule = getattr(self.trainer, "datamodule", None)
            x = getattr(datamodule, "t_train", None)
            if x is not None:
                before, after = self.vae.refit_prior(
                    x, seed=torch.initial_seed() + self.current_epoch)
                self.log("train/prior_refit_gain", after - before, on_step=False, on_epoch=True)

    def on_train_end(self) -> None:
        # Graphs point at this fit's parameters and optimiser state; Lightning moves the model
        # off the GPU after fit, so they must not outlive it.
        self._graphed = None
        # Sampling and evaluation after training see the decoder uncapped.
        self.vae.set_log_var_ceiling(float("inf"))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[LR_SEGMENT_KEY] = self._lr_segment.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning loads the weights after this hook: a checkpoint written before the VAE was
        # split out of this module keys them without the ``vae.`` prefix.
        checkpoint["state_dict"] = upgraded_state_dict(checkpoint["state_dict"])
        segment = checkpoint_lr_segment(checkpoint)
        if segment is not None:
            self._lr_segment = self._loaded_lr_segment = segment
            as_lambda_state(checkpoint)
