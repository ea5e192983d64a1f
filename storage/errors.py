"""Exceptions every storage module raises; messages say what the user can do."""

import sqlite3


class StorageError(Exception):
    """Any user-actionable storage problem; the message says what is wrong."""


class SettingsError(StorageError, ValueError):
    """Invalid settings; the message says what to change."""


class UnavailableError(StorageError, sqlite3.OperationalError):
    """The machine refused a read or write (disk full, read-only or unreadable folder, a lock held
    too long): nothing is wrong with the project, and nothing committed before is lost; trying
    again once the cause is gone succeeds. Also an OperationalError, for callers that retry those."""
