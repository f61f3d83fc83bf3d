"""User-facing errors: each carries one line that the CLI prints as it is."""


class TunesmithError(Exception):
    """Something the user can fix; the message says what and how."""


class InvalidParameter(TunesmithError, ValueError):
    """A generation or loading parameter out of range."""


class ModelNotFound(TunesmithError):
    """An alias, hub id or folder that does not lead to a checkpoint."""


class CheckpointError(TunesmithError):
    """A checkpoint that is incomplete, damaged or of an unknown layout."""
