"""The VAE as a LightningModule: dense ReLU encoder/decoder, a likelihood head, a prior.

Two coordinate systems meet here. The networks (``encode``, ``decode``, ``encode_and_sample``)
work in the normalised coordinates the data module trains on. Everything meant for a user
(``sample``, ``embed``, ``log_prob``) takes or returns data coordinates, using the normaliser
stored as buffers, so a checkpoint alone reproduces samples in the units of the mixture.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

from gmm_vae import schedules
from gmm_vae.graphed_step import GraphedStep
from gmm_vae.losses import (
    gaussian_log_likelihood,
    gaussian_log_likelihood_per_dim,
    kl_standard_normal,
    mse_implied_log_var,
    mse_reconstruction,
    residual_log_likelihood_per_dim,
    row_selector,
    tril_index,
    unwhiten,
    whiten,
)
from gmm_vae.priors import build_prior
from gmm_vae.resources import (
    iwae_bytes_per_point,
    lower_outputs,
    rows_per_chunk,
    uses_full_covariance,
)

# Bounds on the decoder's log-variance: below, the likelihood can blow up on a single point;
# above, the decoder could explain everything as noise.
_MIN_LOG_VAR, _MAX_LOG_VAR = -12.0, 6.0
_TERMS = ("loss", "recon", "kl")
# Points whose posterior samples the mixture prior is refitted to (EM cost grows with them).
PRIOR_REFIT_POINTS = 20_000
# Priors whose log-density has no data-dependent host control flow, so a CUDA graph can hold
# it (the mixture builds its torch.distributions without argument validation for this reason).
# The flow prior (zuko) is unverified under capture and keeps the eager step.
_GRAPH_SAFE_PRIORS = ("standard", "mog")


# Where a checkpoint keeps the learning rate's schedule (``schedules.CosineSegment``).
LR_SEGMENT_KEY = "lr_segment"


def checkpoint_lr_segment(checkpoint: dict[str, Any]) -> schedules.CosineSegment | None:
    """The learning-rate segment a checkpoint was trained on; None for a constant rate.

    Checkpoints written before the segment was saved hold torch's ``CosineAnnealingLR`` state,
    whose ``T_max`` is the run's length: the segment (0, 0, T_max).
    """
    if checkpoint.get(LR_SEGMENT_KEY):
        segment = schedules.CosineSegment.from_dict(checkpoint[LR_SEGMENT_KEY])
        return segment if segment.end_epoch > 0 else None
    states = checkpoint.get("lr_schedulers") or []
    if states and "T_max" in states[0]:
        return schedules.CosineSegment(0, 0.0, int(states[0]["T_max"]))
    return None


def _as_lambda_state(checkpoint: dict[str, Any]) -> None:
    """Turn an old checkpoint's ``CosineAnnealingLR`` state into the ``LambdaLR`` one."""
    for state in checkpoint.get("lr_schedulers") or []:
        if "T_max" in state:
            state.pop("T_max")
            state.pop("eta_min", None)
            state.setdefault("lr_lambdas", [None])


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class VAE(L.LightningModule):
    """A dense VAE whose samples can be judged against the true mixture."""

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
        # The CUDA-graph step (gmm_vae.graphed_step), built at the first training step on CUDA.
        self._graphed: GraphedStep | None = None
        # The learning rate's decay (schedules.CosineSegment), saved in every checkpoint, and
        # the one a resumed checkpoint brought, until training starts from it.
        self._lr_segment = schedules.CosineSegment(0, 0.0, 0)
        self._loaded_lr_segment: schedules.CosineSegment | None = None
        hidden = list(hidden_dims)
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.likelihood = likelihood
        # The full-covariance head adds the strictly-lower entries of p(x|z)'s precision
        # factor (losses.whiten): within-component shape need not pass through the code. The
        # argument defaults to diag so that checkpoints written before it existed load as the
        # head they were trained with; the config's default (a new run's) is full.
        self.full_cov = uses_full_covariance(likelihood, decoder_covariance)
        out = 2 * data_dim if likelihood == "gaussian" else data_dim
        out += lower_outputs(data_dim, self.full_cov)
        # Encoder ends in one linear layer giving [mean, log-variance] of q(z|x).
        self.encoder = mlp([data_dim, *hidden, 2 * latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden), out])
        # Ceiling on the decoder's log-variance, raised epoch by epoch during the warm-up (see
        # ``on_train_epoch_start``); a buffer so a CUDA graph reads the current value.
        self.register_buffer("log_var_ceiling", torch.tensor(_MAX_LOG_VAR), persistent=False)
        self.register_buffer("tril_index", tril_index(data_dim), persistent=False)
        self.register_buffer("row_selector", row_selector(data_dim), persistent=False)
        if likelihood == "gaussian" and decoder_init_log_var:
            # Start p(x|z) narrow: see docs/fidelity.md, "Posterior collapse on the ring".
            with torch.no_grad():
                self.decoder[-1].bias[data_dim:2 * data_dim] = decoder_init_log_var
        if self.full_cov:
            # Start as the diagonal head (P = I); gradients still reach these outputs.
            with torch.no_grad():
                self.decoder[-1].weight[2 * data_dim:] = 0.0
                self.decoder[-1].bias[2 * data_dim:] = 0.0
        self.prior = build_prior(prior, latent_dim, prior_components, flow_transforms,
                                 flow_hidden)
        shift = torch.zeros(data_dim) if data_shift is None else torch.tensor(data_shift)
        scale = torch.ones(data_dim) if data_scale is None else torch.tensor(data_scale)
        self.register_buffer("data_shift", shift.float())
        self.register_buffer("data_scale", scale.float())
        self._mse_log_var = mse_implied_log_var(mse_reduction, data_dim)

    # ------------------------------------------------------------- networks
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of q(z|x), x in normalised coordinates."""
        mean, log_var = self.encoder(x).chunk(2, dim=-1)
        return mean, log_var.clamp(_MIN_LOG_VAR, _MAX_LOG_VAR)

    @staticmethod
    def reparameterize(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
        """z = mean + sigma * eps: a sample that gradients flow through."""
        return mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)

    def encode_and_sample(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The seed's interface: (posterior mean, posterior variance, reparameterised z)."""
        mean, log_var = self.encode(x)
        return mean, log_var.exp(), self.reparameterize(mean, log_var)

    def decode_params(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log-variance) of p(x|z) in normalised coordinates.

        For the ``sigmoid`` head the log-variance is the constant its MSE loss implies. For the
        full-covariance head these are the conditional variances along P's whitened axes.
        """
        return self.decode_dist(z)[:2]

    def decode_dist(self, z: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(mean, log-variance, lower) of p(x|z), normalised coordinates.

        ``lower``: the strictly-lower entries of the precision factor P (``losses.whiten``),
        None for a diagonal p(x|z).
        """
        h = self.decoder(z)
        lower = None
        if self.likelihood == "gaussian":
            d = self.data_dim
            mean, raw = h[..., :d], h[..., d:2 * d]
            if self.full_cov:
                lower = h[..., 2 * d:]
            log_var = raw.clamp(_MIN_LOG_VAR, _MAX_LOG_VAR)
            if self.hparams.decoder_var_warmup_epochs:
                log_var = torch.minimum(log_var, self.log_var_ceiling)
        else:
            mean = torch.sigmoid(h)
            log_var = torch.full_like(mean, self._mse_log_var)
        return mean, log_var, lower

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(B,) log p(x|z), normalised coordinates, for either Gaussian form of the head."""
        mean, log_var, lower = self.decode_dist(z)
        residual = whiten(x, mean, lower, self.tril_index, self.row_selector)
        return residual_log_likelihood_per_dim(residual, log_var).sum(dim=-1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The seed's interface: the decoder's reconstruction (mean of p(x|z)), normalised."""
        return self.decode_params(z)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct normalised ``x`` through the posterior mean (deterministic)."""
        return self.decode(self.encode(x)[0])

    # --------------------------------------------------------------- loss
    def kl_weight(self) -> float:
        """beta, ramped over the first ``kl_warmup_epochs`` epochs (``schedules.kl_weight``)."""
        if self._trainer is None:
            return float(self.hparams.beta)
        return schedules.kl_weight(self.current_epoch, self.hparams.beta,
                                   self.hparams.kl_warmup_epochs)

    def loss_terms(self, x: torch.Tensor,
                   kl_weight: float | torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{"loss", "recon", "kl"}``: each per sample (nats), averaged over the batch.

        ``kl_weight`` overrides ``kl_weight()``; the CUDA-graph step passes a device tensor so
        that a replayed graph reads the current warm-up weight instead of a captured constant.
        """
        mean, log_var = self.encode(x)
        z = self.reparameterize(mean, log_var)
        if self.likelihood == "gaussian":
            recon = -self.log_likelihood(x, z)
        else:
            recon = mse_reconstruction(x, self.decode(z), self.hparams.mse_reduction)
        if getattr(self.prior, "has_analytic_kl", False):
            kl_dims = kl_standard_normal(mean, log_var)  # (B, L)
            kl = kl_dims.sum(dim=-1)
            fb = self.hparams.free_bits
            kl_used = kl_dims.mean(dim=0).clamp(min=fb).sum() if fb > 0 else kl.mean()
        else:
            # Single-sample Monte Carlo KL: log q(z|x) - log p(z).
            kl = gaussian_log_likelihood(z, mean, log_var) - self.prior.log_prob(z)
            fb = self.hparams.free_bits * self.latent_dim
            kl_used = kl.mean().clamp(min=fb) if fb > 0 else kl.mean()
        recon_mean = recon.mean()
        weight = self.kl_weight() if kl_weight is None else kl_weight
        loss = recon_mean + weight * kl_used
        return {"loss": loss, "recon": recon_mean, "kl": kl.mean()}

    # ----------------------------------------------------- lightning hooks
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
                # CUDA: forward, backward and Adam replayed as one graph (gmm_vae.graphed_step).
                step_terms = graphed.step(mini, self.kl_weight())
                opt._on_before_step()  # type: ignore[union-attr]
                opt._on_after_step()  # type: ignore[union-attr]
                rows.append(step_terms)
                self._log_step(step_terms)
                continue
            terms = self.loss_terms(mini)
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
        terms = self.loss_terms(x, kl_weight=kl_weight)
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

    def on_train_end(self) -> None:
        # Graphs point at this fit's parameters and optimiser state; Lightning moves the model
        # off the GPU after fit, so they must not outlive it.
        self._graphed = None
        # Sampling and evaluation after training see the decoder uncapped.
        self.log_var_ceiling.fill_(_MAX_LOG_VAR)

    def decoder_log_var_ceiling(self, epoch: int) -> float:
        """The cap on the decoder's log-variance during epoch ``epoch``
        (``schedules.log_var_ceiling``, within the model's own upper bound)."""
        return min(_MAX_LOG_VAR, schedules.log_var_ceiling(
            epoch, float(self.hparams.decoder_init_log_var),
            int(self.hparams.decoder_var_warmup_epochs)))

    def on_train_epoch_start(self) -> None:
        self.log_var_ceiling.fill_(self.decoder_log_var_ceiling(self.current_epoch))

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
                before, after = self.refit_prior(x, seed=torch.initial_seed() + self.current_epoch)
                self.log("train/prior_refit_gain", after - before, on_step=False, on_epoch=True)

    def prior_refit_due(self, epoch: int) -> bool:
        """Whether the mixture prior is refitted by EM after epoch ``epoch`` (0-based):
        ``schedules.prior_refit_due`` with this run's interval, warm-up and length."""
        if not hasattr(self.prior, "refit"):
            return False
        max_epochs = self.trainer.max_epochs if self._trainer is not None else None
        return schedules.prior_refit_due(epoch, int(self.hparams.prior_refit_every),
                                         int(self.hparams.kl_warmup_epochs), max_epochs)

    @torch.no_grad()
    def refit_prior(self, x: torch.Tensor, seed: int,
                    max_points: int = PRIOR_REFIT_POINTS) -> tuple[float, float]:
        """Refit the mixture prior by EM to one q(z|x) sample per point of normalised ``x``.

        The prior that maximises the ELBO is the aggregate posterior; SGD leaves components
        straddling gaps between posterior clusters, EM does not (docs/fidelity.md, "Holes in
        the prior").
        At most ``max_points`` points (a seeded subset), so the cost stays bounded. Returns the
        mean log p(z) before and after (kept only when it improved). Global RNG untouched.
        """
        gen = torch.Generator().manual_seed(int(seed) % 2**63)
        if len(x) > max_points:
            x = x[torch.randperm(len(x), generator=gen)[:max_points]]
        mean, log_var = self.encode(x.to(self.device, self.dtype))
        eps = torch.randn(mean.shape, generator=gen).to(mean)
        z = mean + torch.exp(0.5 * log_var) * eps
        return self.prior.refit(z, seed=int(seed) % 2**32)

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
        terms = self.loss_terms(batch)
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

    def on_train_start(self) -> None:
        """A resumed run with a new ``max_epochs`` continues its decay from where it stands."""
        scheduler = self.lr_schedulers()
        if scheduler is not None and self._loaded_lr_segment is not None:
            at = int(scheduler.last_epoch)  # type: ignore[union-attr]
            self._lr_segment = self._loaded_lr_segment.extended(at, int(self.trainer.max_epochs))
        self._loaded_lr_segment = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[LR_SEGMENT_KEY] = self._lr_segment.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        segment = checkpoint_lr_segment(checkpoint)
        if segment is not None:
            self._lr_segment = self._loaded_lr_segment = segment
            _as_lambda_state(checkpoint)

    # ------------------------------------------------ data-coordinate API
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.data_shift) / self.data_scale

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.data_scale + self.data_shift

    @torch.no_grad()
    def sample(self, n: int, include_noise: bool | None = None) -> torch.Tensor:
        """Draw ``n`` points from the model, in data coordinates: z ~ p(z), x ~ p(x|z).

        By default the Gaussian head samples p(x|z) (decoder means alone are too concentrated);
        the sigmoid head returns decoder outputs as the study did. ``include_noise`` overrides.
        """
        noise = self.likelihood == "gaussian" if include_noise is None else include_noise
        z = self.prior.sample(n).to(self.device)
        return self.denormalize(self.decode_sample(z, noise))

    def decode_sample(self, z: torch.Tensor, include_noise: bool = True) -> torch.Tensor:
        """x ~ p(x|z) in normalised coordinates (its mean when ``include_noise`` is false)."""
        x, log_var, lower = self.decode_dist(z)
        if include_noise:
            x = x + unwhiten(torch.exp(0.5 * log_var) * torch.randn_like(x), lower)
        return x

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior means of data-coordinate points: the latent codes the analysis clusters."""
        return self.encode(self.normalize(x.to(self.device, self.dtype)))[0]

    @torch.no_grad()
    def latent_usage(self, x: torch.Tensor) -> dict[str, Any]:
        """How much the latent code is used, on data-coordinate points: collapse diagnostics.

        ``mean_variance``: per latent unit, the variance over the points of the posterior mean
        (Burda et al. 2016 call a unit active when it exceeds 0.01). ``kl``: mean KL(q(z|x) ||
        p(z)) in nats (one-sample Monte Carlo, analytic for the standard prior).
        ``kl_per_dim``: mean KL of each coordinate's posterior against the prior's 1-D marginal
        (None for the flow prior, whose marginals have no closed form). A collapsed posterior
        has every unit inactive and KL near 0: the decoder then ignores z.
        """
        mean, log_var = self.encode(self.normalize(x.to(self.device, self.dtype)))
        z = self.reparameterize(mean, log_var)
        log_q_dims = gaussian_log_likelihood_per_dim(z, mean, log_var)
        if getattr(self.prior, "has_analytic_kl", False):
            kl_dims = kl_standard_normal(mean, log_var)
            kl = kl_dims.sum(dim=-1)
        else:
            kl = log_q_dims.sum(dim=-1) - self.prior.log_prob(z)
            marginal = self.prior.marginal_log_prob(z)
            kl_dims = None if marginal is None else log_q_dims - marginal
        return {
            "mean_variance": mean.var(dim=0).double().cpu().tolist() if len(mean) > 1
            else [0.0] * self.latent_dim,
            "kl": float(kl.mean()),
            "kl_per_dim": None if kl_dims is None
            else kl_dims.mean(dim=0).double().cpu().tolist(),
        }

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, k: int = 64, chunk: int = 4096) -> torch.Tensor:
        """(N,) importance-weighted (IWAE) estimate of log p(x), nats, data coordinates.

        log p(x) >= log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), tight as k grows; the log-Jacobian
        of the normalisation converts the density back to data units. ``chunk`` points at a
        time, fewer when their k importance samples would pass the evaluation's memory budget.
        """
        out = []
        log_jac = torch.log(self.data_scale).sum()
        chunk = rows_per_chunk(iwae_bytes_per_point(k, self.latent_dim, self.data_dim,
                                                    list(self.hparams.hidden_dims), self.full_cov),
                               cap=chunk)
        for xb in x.to(self.device, self.dtype).split(chunk):
            xn = self.normalize(xb)
            mean, log_var = self.encode(xn)
            eps = torch.randn(k, *mean.shape, device=mean.device, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * log_var) * eps  # (k, B, L)
            log_px = self.log_likelihood(xn.expand(k, -1, -1).reshape(-1, self.data_dim),
                                         z.reshape(-1, self.latent_dim)).view(k, -1)
            log_pz = self.prior.log_prob(z.reshape(-1, self.latent_dim)).view(k, -1)
            log_qz = gaussian_log_likelihood(z, mean, log_var)
            log_w = log_px + log_pz - log_qz
            out.append(torch.logsumexp(log_w, dim=0) - math.log(k) - log_jac)
        return torch.cat(out)
