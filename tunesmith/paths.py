"""Where tunesmith keeps what it builds for itself (compiled kernels, benchmark checkpoints) and what
users make through its server. Models are not here: they live in the Hugging Face cache."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def cache_root() -> Path:
    """$TUNESMITH_CACHE, else $XDG_CACHE_HOME/tunesmith, else ~/.cache/tunesmith."""
    if os.environ.get("TUNESMITH_CACHE"):
        return Path(os.environ["TUNESMITH_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tunesmith"


def data_root() -> Path:
    """Where tunesmith keeps what users make through it (the server's jobs and audio): $TUNESMITH_DATA,
    else the platform's per-user data folder (XDG on Linux, Application Support on macOS, LOCALAPPDATA
    on Windows), then /tunesmith."""
    if os.environ.get("TUNESMITH_DATA"):
        return Path(os.environ["TUNESMITH_DATA"]).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "tunesmith"
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "tunesmith"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "tunesmith"
