"""Where tunesmith keeps what it builds for itself (compiled kernels, benchmark checkpoints).
Models are not here: they live in the Hugging Face cache."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$TUNESMITH_CACHE, else $XDG_CACHE_HOME/tunesmith, else ~/.cache/tunesmith."""
    if os.environ.get("TUNESMITH_CACHE"):
        return Path(os.environ["TUNESMITH_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tunesmith"
