"""Reading checkpoints safely: one place for train.py (resume) and evaluate.py.

Checkpoints are loaded with ``weights_only=True`` (no arbitrary code from a file), and every way
a file can be wrong becomes a one-line ConfigError that names the setting it came from. (They
are written by ``callbacks.AtomicCheckpointIO``.)
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from gmm_vae.errors import ConfigError


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


def check_weights(model: Any, state: dict[str, Any], what: str, reference: str) -> None:
    """Raise when the checkpoint's weights do not fit ``model``, naming the first mismatches."""
    got: dict[str, Any] = state["state_dict"]
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
