"""Audio files whose decoded length dwarfs their size (silence compresses to almost nothing), and FLAC
headers that lie about it: what a decompression bomb is made of."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def silent_flac(path: Path, seconds: float, rate: int = 16000, channels: int = 1) -> Path:
    """`seconds` of silence as FLAC, written block by block (the test never holds the audio)."""
    block = np.zeros((1 << 18, channels), np.float32)
    left = int(seconds * rate)
    with sf.SoundFile(str(path), "w", rate, channels, format="FLAC", subtype="PCM_16") as out:
        while left > 0:
            out.write(block[: min(left, len(block))])
            left -= len(block)
    return path


def claim_frames(path: Path, frames: int) -> Path:
    """Rewrite the sample count in a FLAC's STREAMINFO header (36 bits; 0 means 'not known')."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO comes first
    packed = int.from_bytes(data[18:26], "big")  # rate (20 bits), channels (3), bits (5), samples (36)
    packed = packed & ~((1 << 36) - 1) | frames
    data[18:26] = packed.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path
