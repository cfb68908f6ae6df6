"""The one exception type that means "the user asked for something invalid".

Raised with a single line naming the setting, its value and what is allowed; the command-line
entry points print it as ``error: <message>`` and exit non-zero without a traceback.
"""


class ConfigError(ValueError):
    """A user-facing configuration or input error, printed as one line."""


class TrainingDiverged(RuntimeError):
    """The training loss stopped being finite; the message says where and what to try."""
