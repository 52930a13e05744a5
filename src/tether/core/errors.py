"""Error types that separate a user's mistake from a bug in tether.

A :class:`UserError` means the input was wrong (a missing path, a bad config key, a
malformed data row). The CLI prints its message as one line and exits with code 2;
the message must name the file, line, key or value at fault.
"""


class TetherError(Exception):
    """Base class of tether's own exceptions."""


class UserError(TetherError):
    """A mistake in the user's input; printed as one line, exit code 2."""


class ConfigError(UserError):
    """A config file or override that does not validate."""


class DataError(UserError):
    """A dataset file or row that does not parse or validate."""
