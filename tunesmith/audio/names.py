"""Output file names, as the CLI writes them and the server offers its downloads: the prompt's words,
the seed, and the stem of a stems file (calm-lofi-piano-42.wav, calm-lofi-piano-42-drums.wav); an -o name
without an extension."""

from __future__ import annotations

import re
from pathlib import Path, PurePath


def slug(prompt: str, limit: int = 40) -> str:
    """A file-name stem from a prompt: its words (letters and digits of any script), lower case, joined
    by '-', cut at a word within `limit` characters."""
    words = re.findall(r"[^\W_]+", prompt.lower())
    out = ""
    for w in words:
        if len(out) + len(w) + 1 > limit:
            break
        out = f"{out}-{w}" if out else w
    return out or (words[0][:limit] if words else "tunesmith")


def clip_name(prompt: str, seed: int | None = None, stem: str | None = None, ext: str = "wav") -> str:
    """The file name of a clip: PROMPT-SEED.EXT (no seed: PROMPT.EXT), a stem's PROMPT-SEED-STEM.EXT."""
    return f"{slug(prompt)}{'' if seed is None else f'-{seed}'}{f'-{stem}' if stem else ''}.{ext}"


def stem_name(name: str, stem: str) -> str:
    """A stem's file name beside its clip's: NAME.EXT -> NAME-STEM.EXT."""
    path = PurePath(name)
    return f"{path.stem}-{stem}{path.suffix}"


def named_output(output: str, suffix: str) -> Path:
    """-o NAME naming one file: NAME as given, or with `suffix` when it has none (`generate -o song` writes
    song.wav, `score reel.mp4 ... -o scored` scored.mp4: what a name without an extension means to most). A
    folder is asked for with a trailing slash (or is one already): the callers look for those first."""
    path = Path(output)
    return path if path.suffix else path.with_name(path.name + suffix)
