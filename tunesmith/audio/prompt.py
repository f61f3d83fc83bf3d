"""Audio prompts for continuation: checked audio (tunesmith.request.audio_input) -> the model's rate and
channels, and the join of the prompt's own samples with the continuation."""

from __future__ import annotations

import numpy as np

from .finishing import equal_power_curves
from .io import resample

JOIN_SECONDS = 0.02  # the prompt's last 20 ms crossfade into the codec's rendition of it


def fit_audio(audio: np.ndarray, rate: int, sample_rate: int, channels: int) -> np.ndarray:
    """(channels, samples) at `rate` -> (channels, samples) float32 at sample_rate: resampled, mixed down
    to mono or widened to stereo."""
    audio = resample(audio, rate, sample_rate)
    if channels == 1:
        return audio.mean(axis=0, keepdims=True)
    if audio.shape[0] == 1:
        return np.repeat(audio, 2, axis=0)
    return audio[:2]


def keep_prompt_samples(prompt: np.ndarray, generated: np.ndarray, sample_rate: int) -> np.ndarray:
    """The user's prompt samples, then the continuation; the prompt's last 20 ms crossfade into the
    codec's rendition of it, so the join has no click."""
    out = generated.copy()
    n = prompt.shape[1]
    fade = min(int(JOIN_SECONDS * sample_rate), n)
    out[:, : n - fade] = prompt[:, : n - fade]
    fade_in, fade_out = equal_power_curves(fade)
    out[:, n - fade : n] = prompt[:, n - fade :] * fade_out + generated[:, n - fade : n] * fade_in
    return out
