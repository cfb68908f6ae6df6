"""Ctrl-C (SIGINT) and a scheduler's SIGTERM end a run cleanly, with a loadable checkpoint.

Left alone, Ctrl-C raises ``KeyboardInterrupt`` wherever the interpreter happens to be, possibly
halfway through writing ``last.ckpt``; Lightning turns it into ``sys.exit(1)``, and SIGTERM
outside ``trainer.fit`` (data generation, the final evaluation) kills the process at once,
leaving ``status.json`` at "running". Here both signals are caught for the whole run: during
training the first one only takes note and ``StopOnSignal`` stops at the end of the current
training step (never inside a checkpoint write), so ``last.ckpt`` is the last completed epoch's;
elsewhere, or on a second signal, ``RunInterrupted`` is raised at once. The pipeline records
``status.json`` = interrupted with the signal's name, and ``resume=<run_dir>`` continues.

Lightning 2.6 installs its own SIGTERM handler during ``fit`` and calls the one found before it
(ours) as well (``tests/test_reliability.py`` pins that the signal's name reaches status.json).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import lightning as L

from gmm_vae.errors import RunInterrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalWatch:
    """Catches SIGINT and SIGTERM while installed; remembers the first one."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._defer = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signal.Signals(signum).name
        if not (self._defer and first):
            raise RunInterrupted(self.received or signal.Signals(signum).name)

    @contextmanager
    def installed(self) -> Iterator[SignalWatch]:
        """Our handlers for the duration; the previous ones afterwards. Only the main thread
        can own signal handlers: elsewhere (a launcher's worker thread) nothing changes."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.getsignal(s) for s in SIGNALS}
        for s in SIGNALS:
            signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Within: the first signal is only noted, for ``StopOnSignal`` to act on."""
        self._defer = True
        try:
            yield
        finally:
            self._defer = False

    def raise_if_received(self) -> None:
        if self.received is not None:
            raise RunInterrupted(self.received)


class StopOnSignal(L.Callback):
    """Ends training after the current step once the watch has seen a signal.

    Checked after every training step and at the end of every epoch (after its checkpoints),
    so the run stops within one step and ``last.ckpt`` is always a complete epoch's.
    """

    def __init__(self, watch: SignalWatch) -> None:
        self.watch = watch

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self.watch.raise_if_received()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.watch.raise_if_received()
