"""The tvmq exception hierarchy.

Every error tvmq raises on purpose derives from :class:`TvmqError`, so a caller (and the
CLI, which maps it to exit code 1) can tell a user mistake from an internal bug. The
subclasses also derive from the closest built-in exception where one fits, so ``except
ValueError`` keeps working for code that does not know about tvmq.
"""


class TvmqError(Exception):
    """Base class of every error tvmq raises deliberately."""


class ConfigError(TvmqError, ValueError):
    """A configuration value is out of range or inconsistent (bits, axis, group size...)."""


class UnknownNameError(ConfigError, KeyError):
    """A name (scheme, preset, board...) is not registered; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(TvmqError, ValueError):
    """Input data cannot be quantized as given: empty, NaN/inf, wrong shape or dtype."""


class FormatError(TvmqError, ValueError):
    """A serialized object (codebook, artifact, message) is malformed or from a newer version."""
