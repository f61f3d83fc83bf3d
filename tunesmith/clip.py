"""Clip: one generated piece with everything needed to reproduce and judge it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .audio.checks import CheckResult
from .audio.io import write_audio


@dataclass
class Clip:
    audio: np.ndarray  # (channels, samples) float32
    sample_rate: int
    prompt: str
    seed: int
    params: dict = field(default_factory=dict)  # model, duration and sampling settings
    check: CheckResult | None = None
    timings: dict = field(default_factory=dict)  # wall seconds per stage of the batch: text, lm, codec

    @property
    def duration(self) -> float:
        return self.audio.shape[1] / self.sample_rate

    @property
    def channels(self) -> int:
        return self.audio.shape[0]

    def save(self, path: str | Path) -> Path:
        """Write the clip; the format follows the extension (.wav, .flac)."""
        return write_audio(Path(path), self.audio, self.sample_rate)
