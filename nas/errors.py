"""Exception hierarchy: every user-facing error derives from :class:`NasError`.

The CLI turns any ``NasError`` into one line on stderr and exit status 2.
"""

from __future__ import annotations

__all__ = ["NasError", "ConfigError", "GenotypeError", "UnknownOpError", "DataError"]


class NasError(Exception):
    """Root of the project's errors."""


class ConfigError(NasError, ValueError):
    """A configuration value is invalid; the message names the field."""


class GenotypeError(NasError, ValueError):
    """A genotype (string, file or object) is malformed or inconsistent."""


class DataError(NasError, RuntimeError):
    """A dataset cannot be found, downloaded or read."""


class UnknownOpError(NasError, KeyError):
    """An operation name is not in the registry."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""
