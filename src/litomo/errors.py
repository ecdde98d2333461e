"""Exceptions raised for bad input.

Every error a user can cause by passing wrong data is a :class:`LitomoError` (or a
subclass). The CLI turns these into a one-line message and exit code 2; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations


class LitomoError(Exception):
    """Bad input or an impossible request; the message says what and where."""


class InputFileError(LitomoError):
    """A file is missing, truncated, unreadable or of an unknown format."""


class ManifestError(LitomoError):
    """The experiment manifest is invalid. The message names the file and the field path."""

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None):
        parts = []
        if path:
            parts.append(str(path))
        if field:
            parts.append(f"field '{field}'")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.path = path
        self.field = field


class DataError(LitomoError):
    """Array content is unusable (wrong shape, NaN/inf, all zero, inconsistent energies)."""
