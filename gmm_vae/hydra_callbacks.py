"""Hydra callbacks: summarise a multirun when it ends."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SummarizeSweep(Callback):
    """On ``on_multirun_end`` write summary.csv / summary.md / figures into the sweep dir.

    Registered in ``conf/train.yaml`` (``hydra.callbacks.summarize``), so every multirun of
    train.py ends with one table; ``python -m gmm_vae.summarize <sweep dir>`` does the same by
    hand (a killed sweep, one still running, or one run by a cluster launcher).
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from gmm_vae.summarize import summarize_sweep

        # A process Lightning re-launched as a DDP rank > 0 replays the whole command line,
        # sweep included; only the process the user started writes the summary.
        if any(os.environ.get(v, "0") not in ("", "0") for v in ("LOCAL_RANK", "NODE_RANK")):
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        try:
            paths = summarize_sweep(sweep_dir)
        except Exception as exc:  # a summary problem must never hide the sweep's own results
            log.error("could not summarise %s: %s", sweep_dir, exc)
            return
        print(f"Sweep summary: {paths['markdown']}", flush=True)
