"""Finishing a raw clip: DC removal, fades, loudness (ITU-R BS.1770 / EBU R128), a true-peak limiter, exact
length, crossfades. Audio is (channels, samples) float throughout."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidParameter, TunesmithError
from .io import resample

OVERSAMPLE = 4  # true peak: BS.1770 measures on a 4x oversampled signal
LIMITER_BLOCK = 64  # samples per gain-control step
LIMITER_LOOKAHEAD = 3  # blocks on each side that see a peak coming
LIMITER_RELEASE_S = 0.08  # time for the gain to recover after a peak
LOUDNESS_MIN_S = 0.4  # BS.1770's gating block: shorter audio has no integrated loudness
DC_WINDOW_S = 0.1  # DC blocker: two passes of a moving average this long (a 0.2 s triangular window)
DC_CHUNK = 1 << 20  # samples per step: an hour of audio is filtered in bounded memory


def equal_power_curves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fade in, fade out) of n samples whose powers sum to one at every sample."""
    t = (np.arange(n) + 0.5) / max(n, 1)
    return np.sin(0.5 * np.pi * t), np.cos(0.5 * np.pi * t)


def _samples(seconds: float, sample_rate: int, what: str) -> int:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not np.isfinite(seconds) or seconds < 0:
        raise InvalidParameter(f"{what} must be a number of seconds >= 0, got {seconds}")
    return int(round(seconds * sample_rate))


def fade(audio: np.ndarray, sample_rate: int, fade_in: float = 0.0, fade_out: float = 0.0) -> np.ndarray:
    """Equal-power fade in over the first `fade_in` s and fade out over the last `fade_out` s."""
    n_in, n_out = _samples(fade_in, sample_rate, "fade-in"), _samples(fade_out, sample_rate, "fade-out")
    length = audio.shape[1]
    if n_in + n_out > length:
        raise InvalidParameter(f"fades of {fade_in:g} s + {fade_out:g} s are longer than the clip "
                               f"({length / sample_rate:g} s)")
    out = audio.astype(np.float32, copy=True)
    if n_in:
        out[:, :n_in] *= equal_power_curves(n_in)[0]
    if n_out:
        out[:, length - n_out:] *= equal_power_curves(n_out)[1]
    return out


def remove_dc(audio: np.ndarray, sample_rate: int, periodic: bool = False) -> np.ndarray:
    """Zero-phase DC-blocking high-pass: subtract the local mean, a triangular moving average of
    2 * DC_WINDOW_S. DC goes, drift is cut (-18 dB at 2 Hz, -4.5 dB at 5 Hz), and 10 Hz and up keep their
    level within 0.4 dB. A DC offset eats headroom and unsettles lossy encoders, and the loudness
    meter's K-weighting does not hear it. periodic: the clip is a loop, so its ends are filtered as joined."""
    n = max(1, int(round(DC_WINDOW_S * sample_rate)))
    channels, length = audio.shape
    if length < 2:
        return (audio - audio.mean(axis=1, keepdims=True)).astype(np.float32)
    out = np.empty((channels, length), dtype=np.float32)
    for c in range(channels):
        padded = np.pad(audio[c].astype(np.float64), n - 1, mode="wrap" if periodic else "reflect")
        for start in range(0, length, DC_CHUNK):
            stop = min(start + DC_CHUNK, length)
            mean = _moving_average(_moving_average(padded[start:stop + 2 * (n - 1)], n), n)  # centred on x
            out[c, start:stop] = audio[c, start:stop] - mean
    return out


def _moving_average(x: np.ndarray, n: int) -> np.ndarray:
    """Means of every n consecutive samples: len(x) - n + 1 of them."""
    sums = np.cumsum(np.concatenate([[0.0], x]))
    return (sums[n:] - sums[:-n]) / n


def fit_length(audio: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
    """Trim, or pad with silence, to exactly round(seconds * sample_rate) samples."""
    n = _samples(seconds, sample_rate, "length")
    if n <= audio.shape[1]:
        return audio[:, :n].copy()
    return np.pad(audio, ((0, 0), (0, n - audio.shape[1])))


def crossfade(first: np.ndarray, second: np.ndarray, sample_rate: int, seconds: float) -> np.ndarray:
    """Join two clips, overlapping `seconds` with equal-power curves."""
    n = _samples(seconds, sample_rate, "crossfade")
    if n > min(first.shape[1], second.shape[1]):
        raise InvalidParameter("the crossfade is longer than one of the clips")
    if first.shape[0] != second.shape[0]:
        raise InvalidParameter("cannot join clips with different channel counts")
    fade_in, fade_out = equal_power_curves(n)
    middle = first[:, first.shape[1] - n:] * fade_out + second[:, :n] * fade_in
    return np.concatenate([first[:, :first.shape[1] - n], middle, second[:, n:]], axis=1).astype(np.float32)


def oversampled_abs(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """|signal| at 4x the sample rate (channels, 4 * samples): what a DAC's output reaches between samples."""
    return np.abs(resample(audio, sample_rate, sample_rate * OVERSAMPLE))


def true_peak_dbtp(audio: np.ndarray, sample_rate: int) -> float:
    peak = max(float(oversampled_abs(audio, sample_rate).max(initial=0.0)), float(np.abs(audio).max(initial=0.0)))
    return 20 * np.log10(peak) if peak > 0 else float("-inf")


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """Integrated loudness in LUFS (BS.1770-4 with gating, via pyloudnorm)."""
    import pyloudnorm

    if audio.shape[1] < int(LOUDNESS_MIN_S * sample_rate):
        raise TunesmithError(f"the clip is shorter than {LOUDNESS_MIN_S:g} s: too short to measure loudness")
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(audio.T.astype(np.float64)))


def limit(audio: np.ndarray, sample_rate: int, ceiling_dbtp: float = -1.0) -> np.ndarray:
    """Look-ahead true-peak limiter: the gain falls before a peak (never after it) and recovers over
    LIMITER_RELEASE_S, so the output's true peak stays at or under the ceiling."""
    ceiling = 10 ** (ceiling_dbtp / 20)
    channels, length = audio.shape
    n_blocks = -(-length // LIMITER_BLOCK)
    peaks = oversampled_abs(audio, sample_rate).max(axis=0)  # [4 * length]
    peaks = np.pad(peaks, (0, n_blocks * LIMITER_BLOCK * OVERSAMPLE - peaks.size))
    need = np.minimum(1.0, ceiling / np.maximum(peaks.reshape(n_blocks, -1).max(axis=1), 1e-12))  # per block
    if need.min() >= 1.0:
        return audio.astype(np.float32, copy=True)
    window = np.lib.stride_tricks.sliding_window_view(np.pad(need, LIMITER_LOOKAHEAD, constant_values=1.0),
                                                      2 * LIMITER_LOOKAHEAD + 1)
    held = window.min(axis=1)  # a block's gain already covers its neighbours' peaks
    recover = 1 - np.exp(-LIMITER_BLOCK / (LIMITER_RELEASE_S * sample_rate))
    gains = np.empty_like(held)
    level = 1.0
    for i, target in enumerate(held):  # one step per block: fast enough for minutes of audio
        level = target if target < level else level + (target - level) * recover
        gains[i] = level
    centres = (np.arange(n_blocks) + 0.5) * LIMITER_BLOCK
    per_sample = np.interp(np.arange(length), centres, gains)
    out = (audio * per_sample).astype(np.float32)
    overshoot = true_peak_dbtp(out, sample_rate) - ceiling_dbtp  # the gain ramps themselves can add a hair
    if overshoot > -0.01:
        out *= 10 ** (-(overshoot + 0.02) / 20)
    return out


def normalize_loudness(audio: np.ndarray, sample_rate: int, target_lufs: float = -14.0,
                       ceiling_dbtp: float = -1.0) -> np.ndarray:
    """Gain to `target_lufs` integrated loudness, then the true-peak limiter at `ceiling_dbtp`."""
    for value, what in ((target_lufs, "loudness target"), (ceiling_dbtp, "true-peak ceiling")):
        if not isinstance(value, (int, float)) or not np.isfinite(value) or not -70 <= value <= 0:
            raise InvalidParameter(f"{what} must be between -70 and 0, got {value}")
    measured = integrated_loudness(audio, sample_rate)
    if not np.isfinite(measured):
        raise TunesmithError("the clip is silent: there is no loudness to normalise")
    gain_db, out = 0.0, audio
    for _ in range(4):  # limiting peaks lowers the loudness of loud targets: measure again and make up
        gain_db += target_lufs - measured
        out = limit(audio * 10 ** (gain_db / 20), sample_rate, ceiling_dbtp)
        measured = integrated_loudness(out, sample_rate)
        if abs(measured - target_lufs) < 0.1:
            break
    return out
