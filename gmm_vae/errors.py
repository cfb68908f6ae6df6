"""The one exception type that means "the user asked for something invalid".

Raised with a single line naming the setting, its value and what is allowed; the command-line
entry points print it as ``error: <message>`` and exit non-zero without a traceback.
"""


class ConfigError(ValueError):
    """A user-facing configuration or input error, printed as one line."""


class RunDirTaken(ConfigError):
    """The run directory holds another run's results or a running run (``gmm_vae.runs.rundir``)."""


class WriteFailed(OSError):
    """A result could not be written (disk full, permissions): the message names the file.

    Not a mistake in the settings, so the command exits 1, not 2; the run is marked failed.
    """


class TrainingDiverged(RuntimeError):
    """The training loss stopped being finite; the message says where and what to try."""


class RunInterrupted(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM (a scheduler) ended the run; the checkpoint is intact.

    A ``BaseException``, like ``KeyboardInterrupt``: no ``except Exception`` on the way up may
    swallow it. ``signal_name`` is what ``status.json`` and the last line printed report.
    """

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, the shell's convention for a process a signal ended."""
        import signal

        return 128 + int(getattr(signal, self.signal_name, signal.SIGTERM))
