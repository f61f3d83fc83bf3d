"""User-facing errors: each carries one line that the CLI prints as it is."""


class TunesmithError(Exception):
    """Something the user can fix; the message says what and how."""


class InvalidParameter(TunesmithError, ValueError):
    """A generation or loading parameter out of range."""


class ModelNotFound(TunesmithError):
    """An alias, hub id or folder that does not lead to a checkpoint."""


class CheckpointError(TunesmithError):
    """A checkpoint that is incomplete, damaged or of an unknown layout."""


class NoSpace(TunesmithError):
    """A write failed because the disk is full (ENOSPC, EDQUOT); the server answers 507 Insufficient Storage.
    The message names what could not be written, never a server path."""


class TooLong(InvalidParameter):
    """Audio longer than what it is used for may hold (decoded length, not file size); the server answers 413."""
