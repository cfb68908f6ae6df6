"""One optimiser step (forward, backward, fused Adam) replayed as a single CUDA graph.

Why: the VAE is so small that a GPU step is bound by launching ~100 tiny kernels from Python
(~6 ms per step measured on an H100, slower than one CPU core). A CUDA graph records those
launches once and replays them with one call, so the host no longer paces the GPU.

This follows PyTorch's "whole network capture" recipe
(https://pytorch.org/docs/stable/notes/cuda.html#whole-network-capture): a few eager steps on a
side stream warm up lazy state (cuBLAS handles, Adam's moments), ``zero_grad(set_to_none=True)``
makes the captured backward allocate the gradients from the graph's own pool, and every replay
reads a static input buffer and writes static outputs. Differences from the recipe, all to keep
training exactly what the eager step does:

* The warm-up steps are real training steps on real mini-batches (the recipe's would be extra
  updates), and capturing records without executing, so the step that triggers a capture is
  replayed once right after it. Every mini-batch is therefore trained on exactly once.
* One graph per mini-batch shape: an epoch of 10,000 points in batches of 128 ends with a batch
  of 16, which gets its own graph after its own warm-up.
* The KL weight (warm-up ramp) and the learning rate (cosine schedule) change between steps, so
  both are device tensors the graph reads: the learning rate is made a tensor in the optimiser's
  param groups, which ``torch.optim.lr_scheduler`` then updates in place.

Nothing here syncs the host: the returned loss terms stay on the device.

Only for CUDA, one device, 32-bit, no gradient clipping, and priors without data-dependent host
control flow (``training.VAEModule`` decides: ``_graphed_step``). Tested against the eager step in
``tests/test_gpu.py`` where a GPU exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# Eager steps per mini-batch shape before it is captured (the recipe uses 3; DDP needs 11).
WARMUP_STEPS = 3

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class _Captured:
    """A captured step: replay after copying a mini-batch into ``static_input``."""

    graph: torch.cuda.CUDAGraph
    static_input: torch.Tensor
    static_terms: torch.Tensor


class GraphedStep:
    """Forward, backward and ``optimizer.step()`` for one mini-batch, as a CUDA graph replay.

    ``loss_fn(batch, kl_weight)`` returns the ``(3,)`` terms ``[loss, recon, kl]`` whose first
    entry is minimised; ``kl_weight`` is a 0-d device tensor this class owns and fills.
    """

    def __init__(self, loss_fn: LossFn, optimizer: torch.optim.Optimizer,
                 device: torch.device, warmup: int = WARMUP_STEPS) -> None:
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.device = device
        self.warmup = warmup
        self.kl_weight = torch.zeros((), device=device)
        self._kl_value: float | None = None
        self._graphs: dict[torch.Size, _Captured] = {}
        self._eager_steps: dict[torch.Size, int] = {}
        self._side = torch.cuda.Stream(device=device)
        make_capturable(optimizer, device)

    def step(self, batch: torch.Tensor, kl_weight: float) -> torch.Tensor:
        """One optimiser step on ``batch``; returns its ``(3,)`` terms, still on the device."""
        if kl_weight != self._kl_value:  # one fill per change, not per step
            self.kl_weight.fill_(kl_weight)
            self._kl_value = kl_weight
        captured = self._graphs.get(batch.shape)
        if captured is None:
            done = self._eager_steps.get(batch.shape, 0)
            if done < self.warmup:
                self._eager_steps[batch.shape] = done + 1
                return self._eager(batch)
            captured = self._graphs[batch.shape] = self._capture(batch)
        captured.static_input.copy_(batch)
        captured.graph.replay()
        # A copy: the next replay overwrites the static output.
        return captured.static_terms.clone()

    @property
    def n_graphs(self) -> int:
        """How many shapes have been captured (for tests and diagnostics)."""
        return len(self._graphs)

    def _eager(self, batch: torch.Tensor) -> torch.Tensor:
        """A normal step on the side stream, as the recipe's warm-up does it."""
        current = torch.cuda.current_stream(self.device)
        self._side.wait_stream(current)
        with torch.cuda.stream(self._side):
            self.optimizer.zero_grad(set_to_none=True)
            terms = self.loss_fn(batch, self.kl_weight)
            terms[0].backward()
            self.optimizer.step()
            out = terms.detach()
        current.wait_stream(self._side)
        out.record_stream(current)  # used on the current stream after the side stream frees it
        return out

    def _capture(self, batch: torch.Tensor) -> _Captured:
        """Record the step for ``batch.shape``, then replay it once for ``batch`` itself."""
        static_input = batch.clone()
        # Gradients allocated inside the capture live in the graph's pool and are overwritten,
        # not accumulated, by every replay.
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            terms = self.loss_fn(static_input, self.kl_weight)
            terms[0].backward()
            self.optimizer.step()
            static_terms = terms.detach()
        return _Captured(graph, static_input, static_terms)


def make_capturable(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Let ``optimizer.step()`` be captured, and keep reading a schedule's learning rate.

    ``capturable=True`` keeps Adam's step counts on the device and passes torch's capture check;
    a tensor learning rate is read by the replayed kernel, where a float would be baked into
    the graph. Done here rather than in ``configure_optimizers`` because loading a checkpoint
    replaces the param groups with the saved ones (floats, ``capturable=False``).
    """
    for group in optimizer.param_groups:
        group["capturable"] = True
        if not isinstance(group["lr"], torch.Tensor):
            group["lr"] = torch.tensor(float(group["lr"]), device=device)
    for state in optimizer.state.values():
        step = state.get("step")
        if isinstance(step, torch.Tensor) and step.device != device:
            state["step"] = step.to(device=device, dtype=torch.float32)
