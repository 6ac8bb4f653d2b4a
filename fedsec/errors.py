"""Exception types shared across fedsec.

Every error a user can cause (bad configuration, missing data, malformed
updates) is one of these, so that the CLI can print one clear line instead of
a traceback.
"""


class FedsecError(Exception):
    """Base class for errors that fedsec reports to the user as one line."""


class ConfigError(FedsecError, ValueError):
    """A configuration key is unknown or its value is not allowed."""


class UnknownNameError(FedsecError, KeyError):
    """A registry was asked for a name it does not hold."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class DataUnavailableError(FedsecError, FileNotFoundError):
    """A dataset is not installed or not where the configuration says."""
