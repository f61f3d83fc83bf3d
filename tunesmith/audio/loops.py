"""Seamless loops: a clip of exactly the asked length that plays back-to-back without a click,
gap or level change at the seam.

From material a little longer than the loop, pick the start where the audio after the loop's end
best matches the loop's head (waveform correlation plus spectral similarity), then crossfade that
overhang into the head. The last sample of the loop is then followed, on repeat, by exactly the
sample that followed it in the original: the seam itself is continuous by construction.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidParameter

CROSSFADE_S = 0.5
SEARCH_S = 1.0
SEARCH_STEP_S = 0.005


def loop_overhang(duration: float) -> float:
    """Extra seconds to generate beyond `duration` for make_loop: crossfade plus search room."""
    return crossfade_seconds(duration) + min(SEARCH_S, duration / 4)


def crossfade_seconds(duration: float) -> float:
    return min(CROSSFADE_S, duration / 4)


def _match_scores(mono: np.ndarray, length: int, fade: int, starts: np.ndarray) -> np.ndarray:
    heads = np.stack([mono[s:s + fade] for s in starts])  # what the loop starts with
    tails = np.stack([mono[s + length:s + length + fade] for s in starts])  # what would follow its end
    dot = (heads * tails).sum(axis=1)
    norm = np.sqrt((heads**2).sum(axis=1) * (tails**2).sum(axis=1)) + 1e-12
    window = np.hanning(fade)
    head_spec, tail_spec = np.abs(np.fft.rfft(heads * window)), np.abs(np.fft.rfft(tails * window))
    spec = (head_spec * tail_spec).sum(axis=1) / (
        np.linalg.norm(head_spec, axis=1) * np.linalg.norm(tail_spec, axis=1) + 1e-12)
    return dot / norm + spec


def _power_preserving_curves(n: int, correlation: float) -> tuple[np.ndarray, np.ndarray]:
    """Fade curves whose mix keeps the power of two signals with the given correlation: equal-power
    for unrelated material (r = 0), equal-gain for identical material (r = 1)."""
    t = (np.arange(n) + 0.5) / n
    r = float(np.clip(correlation, 0.0, 1.0))
    norm = np.sqrt(t**2 + (1 - t) ** 2 + 2 * r * t * (1 - t))
    return t / norm, (1 - t) / norm


def make_loop(audio: np.ndarray, sample_rate: int, duration: float) -> np.ndarray:
    """audio (channels, >= duration + loop_overhang(duration) seconds) -> a loop of exactly duration."""
    length = int(round(duration * sample_rate))
    fade = int(round(crossfade_seconds(duration) * sample_rate))
    search = audio.shape[1] - length - fade
    if length < 1 or fade < 1 or search < 0:
        raise InvalidParameter(f"a {duration:g} s loop needs {duration + loop_overhang(duration):.2f} s of material")
    mono = audio.mean(axis=0).astype(np.float64)
    starts = np.arange(0, search + 1, max(1, int(SEARCH_STEP_S * sample_rate)))
    best = int(starts[np.argmax(_match_scores(mono, length, fade, starts))])
    head = audio[:, best:best + fade].astype(np.float64)
    overhang = audio[:, best + length:best + length + fade].astype(np.float64)
    r = (head * overhang).sum() / (np.sqrt((head**2).sum() * (overhang**2).sum()) + 1e-12)
    fade_in, fade_out = _power_preserving_curves(fade, r)
    out = audio[:, best:best + length].astype(np.float32, copy=True)
    out[:, :fade] = (head * fade_in + overhang * fade_out).astype(np.float32)
    return out
