"""Ctrl-C (SIGINT) and a scheduler's SIGTERM end a run cleanly, with a loadable checkpoint.

Left alone, Ctrl-C raises ``KeyboardInterrupt`` wherever the interpreter happens to be, possibly
halfway through writing ``last.ckpt``; Lightning turns it into ``sys.exit(1)``, and SIGTERM
outside ``trainer.fit`` (data generation, the final evaluation) kills the process at once,
leaving ``status.json`` at "running". Here both signals are caught for the whole run: during
training the first one only takes note and ``StopOnSignal`` stops at the end of the current
training step, or, once an epoch's last step is done, at the end of that epoch after its
checkpoints (never inside a checkpoint write), so ``last.ckpt`` is the last completed epoch's;
elsewhere, or on a second signal, ``RunInterrupted`` is raised at once. The pipeline records
``status.json`` = interrupted with the signal's name, and ``resume=<run_dir>`` continues.

Lightning 2.6 installs its own SIGTERM handler during ``fit`` and calls the one found before it
(ours) as well (``tests/test_reliability.py`` pins that the signal's name reaches status.json);
on one process ``StopOnSignal`` puts ours back for training, because Lightning's would stop in
the middle of validation and lose the epoch (``tests/test_trust.py`` pins both).
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

    def reclaim(self) -> None:
        """Put our handlers back in place of any installed since (Lightning's, during fit)."""
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                signal.signal(s, self._handle)

    def raise_if_received(self) -> None:
        if self.received is not None:
            raise RunInterrupted(self.received)


class StopOnSignal(L.Callback):
    """Ends training once the watch has seen a signal, never losing a finished epoch.

    Within an epoch it stops after the current training step (the epoch is abandoned: a
    partial epoch in ``last.ckpt`` would break an exact resume). A signal that arrives after
    the epoch's last step (during validation or the epoch-end hooks) lets the epoch finish:
    ``trainer.should_stop`` ends the fit after the checkpoints have saved it, and the pipeline
    then raises ``RunInterrupted``.
    """

    def __init__(self, watch: SignalWatch) -> None:
        self.watch = watch

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's own SIGTERM handler, installed for fit, stops at the next validation
        # batch, before the epoch's checkpoints: the finished epoch would be lost. On one
        # process the watch decides alone (Lightning puts ours back when fit ends anyway);
        # under DDP Lightning's handler stays, as it also stops the other ranks.
        if trainer.world_size == 1:
            self.watch.reclaim()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.watch.received is not None and not _last_batch(trainer, batch_idx):
            self.watch.raise_if_received()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.watch.received is not None:
            trainer.should_stop = True


def _last_batch(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether ``batch_idx`` ends the training epoch (the epoch is then complete)."""
    n = trainer.num_training_batches
    return isinstance(n, int | float) and n != float("inf") and batch_idx + 1 >= n
