"""Audio prompts for continuation: whatever the user hands us -> the model's rate and channels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InvalidParameter, TunesmithError
from .finishing import equal_power_curves
from .io import read_audio, resample

JOIN_SECONDS = 0.02  # the prompt's last 20 ms crossfade into the codec's rendition of it


def prepare_prompt_audio(prompt, sample_rate: int, channels: int) -> np.ndarray:
    """A path, a Clip, or (array, rate) -> (channels, samples) float32 at sample_rate."""
    if isinstance(prompt, (str, Path)):
        audio, rate = read_audio(prompt)
        name = str(prompt)
    elif hasattr(prompt, "audio") and hasattr(prompt, "sample_rate"):
        audio, rate, name = prompt.audio, prompt.sample_rate, "the audio prompt"
    elif isinstance(prompt, tuple) and len(prompt) == 2:
        audio, rate, name = prompt[0], prompt[1], "the audio prompt"
    else:
        raise InvalidParameter("audio_prompt must be a file path, a Clip, or (array, sample_rate)")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2 or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise InvalidParameter("audio_prompt arrays must be (channels, samples) or (samples,), with a positive rate")
    if audio.shape[0] > audio.shape[1]:  # (samples, channels) as soundfile returns it
        audio = audio.T
    if audio.shape[1] == 0:
        raise TunesmithError(f"{name} is empty")
    if not np.isfinite(audio).all():
        raise TunesmithError(f"{name} holds NaN or infinite samples")
    if np.sqrt(np.mean(audio.astype(np.float64) ** 2)) < 1e-4:  # -80 dBFS
        raise TunesmithError(f"{name} is silent: there is nothing to continue")
    audio = resample(audio, int(rate), sample_rate)
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
