"""The errors and the warning of the data layer."""

from __future__ import annotations

__all__ = [
    "REFETCH",
    "CorruptDataError",
    "DatasetNotFoundError",
    "DatasetWarning",
    "MissingExtraError",
    "SourceFailed",
]

#: How every message about a damaged file ends: a fresh copy is the only fix.
REFETCH = "delete it and fetch it again"


class DatasetNotFoundError(FileNotFoundError):
    """No source could provide the data set; the message lists every source tried and why."""


class CorruptDataError(ValueError):
    """A file or cache exists but is invalid (truncated, wrong header, wrong checksum)."""


class DatasetWarning(UserWarning):
    """A source was skipped for a reason the user should know (bad data_dir, corrupt cache)."""


class MissingExtraError(ImportError, RuntimeError):
    """An optional dependency is not installed; the message names the ``pip install`` command.

    Also a ``RuntimeError``, so the examples end with that one-line message, not a traceback.
    """


class SourceFailed(Exception):
    """One source had nothing to offer (no file, no network); the message says why.

    Unlike :class:`CorruptDataError` it means "absent", not "damaged", so a missing cache is not
    reported as a corrupt one.
    """
