"""Clip: one generated piece with everything needed to reproduce and judge it. A data class: it imports
no engine (its stems are tunesmith.separate(clip))."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .audio.checks import CheckResult, check_audio
from .audio.finishing import fade, fit_length, limit, normalize_loudness, remove_dc
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

    def save(self, path: str | Path, wav_format: str = "pcm16") -> Path:
        """Write the clip; the format follows the extension (.wav, .flac, .mp3, .ogg, .m4a).
        wav_format: pcm16 (default), pcm24 or float, for WAV (FLAC: pcm16 or pcm24)."""
        return write_audio(Path(path), self.audio, self.sample_rate, wav_format)

    def finish(self, *, fade_in: float = 0.0, fade_out: float = 0.0, loudness: float | None = None,
               ceiling: float = -1.0, length: float | None = None) -> "Clip":
        """A new clip: DC removed, trimmed or padded to `length` s, faded (equal-power), normalised to
        `loudness` LUFS with a true-peak ceiling in dBTP. Without `loudness`, only peaks over the ceiling
        are limited."""
        audio = remove_dc(self.audio, self.sample_rate, periodic=bool(self.params.get("loop")))
        if length is not None:
            audio = fit_length(audio, self.sample_rate, length)
        audio = fade(audio, self.sample_rate, fade_in, fade_out)
        if loudness is not None:
            audio = normalize_loudness(audio, self.sample_rate, loudness, ceiling)
        else:
            audio = limit(audio, self.sample_rate, ceiling)
        finishing = dict(fade_in=fade_in, fade_out=fade_out, loudness=loudness, ceiling=ceiling, length=length)
        return replace(self, audio=audio, params={**self.params, "finishing": finishing}, check=check_audio(audio, self.sample_rate))
