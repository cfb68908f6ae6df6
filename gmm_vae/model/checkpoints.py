"""Reading checkpoints safely, and the layout of what they hold: one place for train.py
(resume), evaluate.py and the training module.

Checkpoints are loaded with ``weights_only=True`` (no arbitrary code from a file), and every way
a file can be wrong becomes a one-line ConfigError that names the setting it came from. (They
are written by ``callbacks.AtomicCheckpointIO``.) Checkpoints of earlier versions are read in
today's layout: weights keyed without the ``vae.`` prefix (``upgraded_state_dict``) and a
``CosineAnnealingLR`` state instead of the learning rate's segment (``checkpoint_lr_segment``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from gmm_vae.errors import ConfigError
from gmm_vae.model import schedules

# The training module keeps the VAE as its ``vae`` child: its weights are ``vae.<name>``.
VAE_PREFIX = "vae."
# Where a checkpoint keeps the learning rate's schedule (``schedules.CosineSegment``).
LR_SEGMENT_KEY = "lr_segment"


def read_checkpoint(path: Path, what: str) -> dict[str, Any]:
    """The checkpoint's contents; ``what`` prefixes the message (e.g. ``ckpt_path=<file>``)."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" in str(exc).lower():
            raise ConfigError(f"{what} holds objects other than tensors and plain data, which a "
                              "weights-only load refuses") from None
        raise ConfigError(f"{what} cannot be read (corrupt or truncated checkpoint)") from None
    except Exception:  # zip, EOF and OS errors all mean the same to a user
        raise ConfigError(f"{what} cannot be read (corrupt or truncated checkpoint)") from None
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise ConfigError(f"{what} is not a Lightning checkpoint (no state_dict)")
    return state


def upgraded_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's weights keyed as the training module's (``vae.encoder.0.weight``).

    Checkpoints written while the VAE was itself the LightningModule key them without the
    prefix (``encoder.0.weight``): those get it. A state dict already in this layout is
    returned as it is.
    """
    if any(key.startswith(VAE_PREFIX) for key in state_dict):
        return state_dict
    return {VAE_PREFIX + key: value for key, value in state_dict.items()}


def check_weights(model: Any, state: dict[str, Any], what: str, reference: str) -> None:
    """Raise when the checkpoint's weights do not fit ``model``, naming the first mismatches."""
    got: dict[str, Any] = upgraded_state_dict(state["state_dict"])
    expected = model.state_dict()
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    reshaped = [f"{k} {list(got[k].shape)} vs {list(v.shape)}" for k, v in expected.items()
                if k in got and tuple(getattr(got[k], "shape", ())) != tuple(v.shape)]

    def few(names: list[str]) -> str:
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        return ", ".join(names[:3]) + more

    problems = [f"{kind} {few(names)}" for kind, names in (
        ("missing", missing), ("unexpected", unexpected),
        ("shape (checkpoint vs config) of", reshaped)) if names]
    if problems:
        raise ConfigError(f"{what}: does not match {reference} ({'; '.join(problems)})")


def saved_step(path: Path) -> int | None:
    """The global step a checkpoint file was written at; None when it cannot be read."""
    try:
        return int(read_checkpoint(path, str(path)).get("global_step", -1))
    except ConfigError:
        return None


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


def as_lambda_state(checkpoint: dict[str, Any]) -> None:
    """Turn an old checkpoint's ``CosineAnnealingLR`` state into the ``LambdaLR`` one."""
    for state in checkpoint.get("lr_schedulers") or []:
        if "T_max" in state:
            state.pop("T_max")
            state.pop("eta_min", None)
            state.setdefault("lr_lambdas", [None])
