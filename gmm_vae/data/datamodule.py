"""LightningDataModule over the GMM: in-memory data, fast batches, and the normalisation.

The model trains in normalised coordinates; everything a user sees is in data coordinates.
The affine map between the two lives in :class:`Normalizer` and travels with the model (as
buffers), so a checkpoint alone can produce samples in data coordinates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch

from gmm_vae.data.gmm import GMM

# Offsets that keep the four random streams of a data seed independent of one another.
_STREAM_TRAIN, _STREAM_VAL, _STREAM_TEST = 1, 2, 3


@dataclass(frozen=True)
class Normalizer:
    """x_norm = (x - shift) / scale, per dimension."""

    shift: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, kind: str) -> Normalizer:
        """``standard``: zero mean, unit variance; ``minmax``: into [0, 1]; ``none``: identity."""
        d = x.shape[1]
        if kind == "standard":
            shift, scale = x.mean(axis=0), x.std(axis=0)
        elif kind == "minmax":
            lo, hi = x.min(axis=0), x.max(axis=0)
            shift, scale = lo, hi - lo
        elif kind == "none":
            shift, scale = np.zeros(d), np.ones(d)
        else:  # guarded by config.validate; kept for direct callers
            raise ValueError(f"unknown normalization {kind!r}")
        scale = np.where(scale > 0, scale, 1.0)
        return cls(shift.astype(np.float64), scale.astype(np.float64))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x - self.shift) / self.scale

    def inverse(self, x: np.ndarray) -> np.ndarray:
        return x * self.scale + self.shift


def epoch_permutation(n: int, seed: int, epoch: int,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """The shuffle order of epoch ``epoch``: a function of ``(seed, epoch)`` alone.

    Drawn on the CPU on every device, so a run visits its data in the same order on a CPU and a
    GPU (and after resuming on either). For a CUDA device the index is copied from pinned memory
    without blocking: one small copy per epoch, no host sync.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    index = torch.randperm(n, generator=g)
    if torch.device(device).type == "cuda":
        index = index.pin_memory().to(device, non_blocking=True)
    return index


class TensorBatches:
    """Batches sliced from one in-memory tensor: no per-sample ``__getitem__``, no collate.

    The permutation of epoch ``e`` depends only on ``(seed, e)``, so training order is the same
    after a resume. Under data-parallel training each rank takes a disjoint, equal-sized shard.
    Batches are slices on ``data``'s device: data already on the GPU stays there.
    """

    def __init__(
        self,
        data: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        epoch_fn: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        group: int = 1,
    ) -> None:
        self.data = data
        self.group = max(1, group)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch_fn = epoch_fn
        self.rank = rank
        self.world_size = world_size
        # Every rank gets the same number of points, so collective ops stay in step.
        self.n_local = len(data) // world_size if world_size > 1 else len(data)

    def __len__(self) -> int:
        n_batches = -(-self.n_local // self.batch_size)
        return -(-n_batches // self.group)

    def __iter__(self) -> Iterator[torch.Tensor]:
        n = len(self.data)
        if self.shuffle:
            index = epoch_permutation(n, self.seed, self.epoch_fn(), self.data.device)
        else:
            index = torch.arange(n, device=self.data.device)
        if self.world_size > 1:
            index = index[self.rank :: self.world_size][: self.n_local]
        data = self.data[index] if self.shuffle or self.world_size > 1 else self.data
        batches = data.split(self.batch_size)
        if self.group == 1:
            yield from batches
        else:
            for start in range(0, len(batches), self.group):
                yield list(batches[start : start + self.group])


class GMMDataModule(L.LightningDataModule):
    """Train / val / test points from a GMM (random from ``seed``, or loaded from a spec file)."""

    def __init__(
        self,
        n_components: int = 4,
        dim: int = 3,
        seed: int = 0,
        spec_path: str | None = None,
        n_samples: int = 10_000,
        n_val: int = 2_000,
        n_test: int = 5_000,
        batch_size: int = 128,
        mean_spread: float = 4.0,
        scale_min: float = 0.4,
        scale_max: float = 1.0,
        weight_concentration: float = 5.0,
        min_separation: float = 2.0,
        normalization: str = "standard",
        steps_per_call: int = 8,
        shuffle_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if spec_path:
            self.gmm = GMM.from_yaml(spec_path)
        else:
            self.gmm = GMM.random(
                n_components,
                dim,
                seed,
                mean_spread=mean_spread,
                scale_range=(scale_min, scale_max),
                weight_concentration=weight_concentration,
                min_separation=min_separation,
            )
        self.seed = seed
        self.shuffle_seed = shuffle_seed
        self.batch_size = batch_size
        self.steps_per_call = steps_per_call
        self._device_splits: dict[tuple[str, torch.device], torch.Tensor] = {}
        self._draw(n_samples, n_val, n_test, normalization)

    def _draw(self, n_train: int, n_val: int, n_test: int, normalization: str) -> None:
        """Sample the three splits eagerly: they are small, and eager means reproducible."""

        def split(stream: int, n: int) -> tuple[np.ndarray, np.ndarray]:
            return self.gmm.sample(n, np.random.default_rng([self.seed, stream]))

        self.x_train, self.y_train = split(_STREAM_TRAIN, n_train)
        self.x_val, self.y_val = split(_STREAM_VAL, n_val)
        self.x_test, self.y_test = split(_STREAM_TEST, n_test)
        self.normalizer = Normalizer.fit(self.x_train, normalization)
        as_tensor = lambda a: torch.from_numpy(self.normalizer.transform(a)).float()  # noqa: E731
        self.t_train, self.t_val, self.t_test = map(as_tensor, (self.x_train, self.x_val,
                                                                 self.x_test))

    @property
    def dim(self) -> int:
        return self.gmm.dim

    def _epoch(self) -> int:
        trainer = self.trainer
        return int(trainer.current_epoch) if trainer is not None else 0

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _on_device(self, name: str) -> torch.Tensor:
        """Split ``name`` (``t_train``...) on the trainer's GPU, copied there once per device.

        On a GPU, per-step host-to-device copies of mini-batches would cost more than this small
        model's step; the whole split (10,000 x 3 floats by default) fits many times over. On a
        CPU (and without a trainer) the split is returned as it is.
        """
        tensor: torch.Tensor = getattr(self, name)
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else tensor.device
        if device.type != "cuda":
            return tensor
        key = (name, device)
        if key not in self._device_splits:
            self._device_splits[key] = tensor.to(device)
        return self._device_splits[key]

    def train_dataloader(self) -> TensorBatches:
        rank, world = self._rank_world()
        return TensorBatches(self._on_device("t_train"), self.batch_size, shuffle=True,
                             seed=self.shuffle_seed, epoch_fn=self._epoch, rank=rank,
                             world_size=world,
                             group=self.steps_per_call)

    def val_dataloader(self) -> TensorBatches:
        # Validation is not sharded: every rank sees the whole (small) set, so the logged value
        # is the same as on a single device.
        return TensorBatches(self._on_device("t_val"), max(self.batch_size, 1024),
                             shuffle=False)

    def test_dataloader(self) -> TensorBatches:
        return TensorBatches(self._on_device("t_test"), max(self.batch_size, 1024),
                             shuffle=False)
