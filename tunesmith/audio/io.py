"""Writing audio files (soundfile / libsndfile)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InvalidParameter, TunesmithError

# Output extension -> (libsndfile format, subtype).
FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16")}


def check_output_path(path: Path) -> Path:
    """Refuse, before any work, a path we could not write: unknown format, missing or read-only folder."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise InvalidParameter(f"unsupported output format '{path.suffix or path.name}': use {' or '.join(FORMATS)}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise TunesmithError(f"cannot write {path}: folder {folder} does not exist")
    if path.is_dir():
        raise TunesmithError(f"cannot write {path}: it is a folder")
    import os

    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise TunesmithError(f"cannot write {path}: permission denied")
    return path


def write_audio(path: Path, audio: np.ndarray, sample_rate: int) -> Path:
    """audio (channels, samples) float in [-1, 1] -> file; the format follows the extension."""
    import soundfile as sf

    path = check_output_path(Path(path))
    fmt, subtype = FORMATS[path.suffix.lower()]
    data = np.clip(np.nan_to_num(audio, nan=0.0), -1.0, 1.0).T  # libsndfile wants (samples, channels)
    try:
        sf.write(str(path), data, sample_rate, format=fmt, subtype=subtype)
    except (OSError, RuntimeError) as err:
        raise TunesmithError(f"cannot write {path}: {err}") from None
    return path
