"""Which instrument the final evaluation is running, said only when it takes a while.

The final evaluation (``report.write_evaluation``: 1M coverage samples, IWAE, t-SNE) can take
minutes on a large model, with nothing on the screen. Inside ``reporting()``, each step the
evaluation marks with ``begin(name)`` prints ``evaluating: <name> ...`` on stderr once it has
run ``after_s`` seconds, and ``evaluating: <name> done in 7.3 s`` when it ends; a step faster
than that prints nothing, so a quick evaluation stays quiet. Outside ``reporting()`` (the
analysis callbacks during training) ``begin`` only returns the time.

``begin`` returns ``time.perf_counter()``, so a timed step reads
``t0 = progress.begin("coverage")`` where it read ``t0 = time.perf_counter()``: the evaluation
keeps its own timings, and this module adds only the words.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TextIO

# A step still running after this long is announced.
AFTER_S = 2.0


class StepReporter:
    """Announces the current step once it is slow; one step at a time, in order."""

    def __init__(self, after_s: float = AFTER_S, stream: TextIO | None = None) -> None:
        self.after_s = float(after_s)
        self.stream = stream
        self._lock = threading.Lock()
        self._name: str | None = None
        self._started = 0.0
        self._announced = False
        self._timer: threading.Timer | None = None

    def _write(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        print(text, file=stream, flush=True)

    def begin(self, name: str) -> float:
        """End the current step, if any, and start ``name``; returns the start time."""
        self.end()
        now = time.perf_counter()
        with self._lock:
            self._name, self._started, self._announced = name, now, False
            self._timer = threading.Timer(self.after_s, self._announce, args=(name,))
            self._timer.daemon = True
            self._timer.start()
        return now

    def _announce(self, name: str) -> None:
        with self._lock:
            if self._name != name or self._announced:
                return
            self._announced = True
            self._write(f"evaluating: {name} ...")

    def end(self) -> None:
        """End the current step: say how long it took if it was announced."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            name, announced, started = self._name, self._announced, self._started
            self._name, self._timer = None, None
        if name is not None and announced:
            self._write(f"evaluating: {name} done in {time.perf_counter() - started:.1f} s")


_ACTIVE: ContextVar[StepReporter | None] = ContextVar("evaluation_progress", default=None)


@contextmanager
def reporting(after_s: float = AFTER_S, stream: TextIO | None = None) -> Iterator[StepReporter]:
    """Within the block, steps marked with ``begin`` are announced when slow."""
    reporter = StepReporter(after_s, stream)
    token = _ACTIVE.set(reporter)
    try:
        yield reporter
    finally:
        reporter.end()
        _ACTIVE.reset(token)


def begin(name: str) -> float:
    """Mark the start of the step ``name`` (announced if slow, inside ``reporting()``);
    returns ``time.perf_counter()``."""
    reporter = _ACTIVE.get()
    return time.perf_counter() if reporter is None else reporter.begin(name)
