"""User-facing errors: each carries one line that the CLI prints as it is (an InvalidParameter as the CLI
names parameters, see its render)."""

from __future__ import annotations

from collections.abc import Mapping


class TunesmithError(Exception):
    """Something the user can fix; the message says what and how."""


class InvalidParameter(TunesmithError, ValueError):
    """A generation or loading parameter out of range.

    param: the API keyword it is about (None: no single one). A message given with param (or with values)
    is a template: it names parameters as fields, `{top_k} must be {expected}, got {value}`, and each shell
    fills them in with its own words for them (render): the API and the CLI write `top_k (--top-k)`, the
    server the JSON field. Other fields are `values`, formatted as str.format formats them. A message
    without param or values is taken as it is."""

    def __init__(self, message: str, param: str | None = None, **values):
        self.param = param
        self.template = message if param is not None or values else None
        self.values = values
        self.names: Mapping[str, str] = {}  # the API's words for parameters (tunesmith.params.refuse's)
        super().__init__(message)

    def render(self, names: Mapping[str, str]) -> str:
        """The message with each parameter written as `names` writes it (one it lacks: bare)."""
        if self.template is None:
            return str(self.args[0]) if self.args else ""
        return self.template.format_map(_Fields(self.values, names))

    def __str__(self) -> str:  # as the API writes parameters (self.names)
        return self.render(self.names)


class _Fields(dict):
    """A template's fields: its values first, then parameters by their shown names (or bare)."""

    def __init__(self, values: dict, names: Mapping[str, str]):
        super().__init__(values)
        self.shown = names

    def __missing__(self, key: str) -> str:
        return self.shown.get(key, key)


class ModelNotFound(TunesmithError):
    """An alias, hub id or folder that does not lead to a checkpoint."""


class CheckpointError(TunesmithError):
    """A checkpoint that is incomplete, damaged or of an unknown layout."""


class NoSpace(TunesmithError):
    """A write failed because the disk is full (ENOSPC, EDQUOT); the server answers 507 Insufficient Storage.
    The message names what could not be written, never a server path."""


class TooLong(InvalidParameter):
    """Audio longer than what it is used for may hold (decoded length, not file size); the server answers 413."""


def did_you_mean(word: str, choices) -> str:
    """' (did you mean X?)' when one of `choices` is close to a mistyped `word`; '' otherwise."""
    from difflib import get_close_matches

    close = get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return f" (did you mean {close[0]}?)" if close else ""
