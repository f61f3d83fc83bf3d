"""Server paths out of what clients read: an error's text names what failed ("the job's audio", "the
upload"), never where the server keeps it. The log keeps the full text."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

_TAIL = r"[^\s'\":,;()\[\]]*"  # the rest of a path: our own file names are ids, never holding these


def server_places(data: Path, media_dirs=(), model_folders=(), lora_dir: Path | None = None
                  ) -> list[tuple[re.Pattern, str]]:
    """(pattern, replacement) for each server folder a message may name, the deepest first. A file of a
    media folder or of the LoRA folder keeps its name there (the client named it); anything else is said
    in words."""
    data = Path(data)
    named = [(data / "audio", "the job's audio"), (data / "uploads", "the upload"), (data / "tmp", "a temporary file"),
             (data, "the server's data folder"), (Path(tempfile.gettempdir()), "a temporary file"),
             *((Path(folder), "the model's files") for folder in model_folders)]
    places = []  # (length of the folder's spelling, pattern, words)
    for folder, words in named:
        places += [(len(form), _pattern(form, tail=True), words) for form in _forms(folder)]
    kept = [(folder, "the media folder") for folder in media_dirs]
    kept += [(Path(lora_dir), "the LoRA folder")] if lora_dir is not None else []
    for folder, words in kept:
        places += [(len(form) + 1, _pattern(form + "/", tail=False), "") for form in _forms(folder)]
        places += [(len(form), _pattern(form, tail=False), words) for form in _forms(folder)]
    return [(pattern, words) for _, pattern, words in sorted(places, key=lambda p: -p[0])]


def redact(message: str, places: list[tuple[re.Pattern, str]]) -> str:
    for pattern, words in places:
        message = pattern.sub(words, message)
    return message


def _forms(folder: Path) -> set[str]:
    """How a message may spell a folder: as given, and resolved (a relative --data, a symlinked /tmp)."""
    forms = {str(folder), str(folder.resolve())}
    return {f for f in forms if "/" in f or "\\" in f}  # a bare word ('data') is no path to hide


def _pattern(form: str, tail: bool) -> re.Pattern:
    """`form` as a whole path or a path's start (not '/tmpfoo' for /tmp), with the rest of the path if `tail`."""
    end = "" if form.endswith("/") else r"(?![\w.-])"
    rest = f"(?:/{_TAIL})*" if tail else ""
    return re.compile(r"(?:file:)?(?<![\w.-])" + re.escape(form) + end + rest)
