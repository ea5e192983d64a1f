"""Exceptions every storage module raises; messages say what the user can do."""


class StorageError(Exception):
    """Any user-actionable storage problem; the message says what is wrong."""


class SettingsError(StorageError, ValueError):
    """Invalid settings; the message says what to change."""
