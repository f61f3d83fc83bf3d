"""How fast a clip goes: its tempo estimated from the autocorrelation of its onset strength.

1. Onset strength, 200 frames a second: the positive change of the log-magnitude spectrum from frame to
   frame, summed over frequency (spectral flux), less its local mean.
2. Its autocorrelation (through the FFT).
3. Each candidate beat period P (40 to 240 bpm, on a grid of a hundredth of a frame) sums, over its beats
   k P up to a few seconds of lag, ac(k P) less the mean of ac((k - 1/4) P) and ac((k - 3/4) P) (read
   between frames by linear interpolation), divided by the square root of the beats counted. The
   multiples pin the period far below one frame (a 1% error at 240 bpm is half a frame); the contrast and
   the square root keep multiples and fractions of the tempo below it. A mild preference for tempi near
   120 bpm settles what is left (with strong off-beats, double the tempo is a fair reading too).

Used by the output check (clip.check.tempo): to measure whether a model kept the tempo asked, not to assume it.
"""

from __future__ import annotations

import numpy as np

FRAME_RATE = 200.0  # onset frames a second: 5 ms
FFT_SIZE = 1024
CHUNK_FRAMES = 2048  # spectra computed at a time
TEMPO_RANGE = (40.0, 240.0)  # bpm searched
LAGS_SECONDS = 6.0  # multiples of the period are read up to this lag
LONGEST_SECONDS = 60.0  # the first minute is enough to measure
SHORTEST_SECONDS = 3.0  # fewer beats than this say nothing
MIN_STRENGTH = 0.1  # best score / autocorrelation at lag 0: weaker is no steady beat
PRIOR_OCTAVES = 1.0  # the 120 bpm preference's width (log2 bpm standard deviation)


def onset_strength(mono: np.ndarray, sample_rate: int) -> np.ndarray:
    """mono [samples] -> spectral flux [frames] at FRAME_RATE frames a second, its local mean removed."""
    hop = sample_rate / FRAME_RATE
    frames = int((len(mono) - FFT_SIZE) / hop) + 1
    if frames < 3:
        return np.zeros(0)
    starts = np.round(np.arange(frames) * hop).astype(np.int64)  # [frames]
    window = np.hanning(FFT_SIZE).astype(np.float32)
    flux, previous = [], None
    for first in range(0, frames, CHUNK_FRAMES):  # bounded memory
        idx = starts[first:first + CHUNK_FRAMES, None] + np.arange(FFT_SIZE)[None]  # [n, FFT_SIZE]
        spectrum = np.log1p(1000.0 * np.abs(np.fft.rfft(mono[idx] * window, axis=1)))  # [n, bins]
        stacked = spectrum if previous is None else np.concatenate([previous[None], spectrum])
        flux.append(np.maximum(np.diff(stacked, axis=0), 0.0).sum(axis=1))  # what rose since the last frame
        previous = spectrum[-1]
    flux = np.concatenate(flux)  # [frames - 1]
    width = int(FRAME_RATE)  # one second of local mean
    return flux - np.convolve(flux, np.ones(width) / width, mode="same")


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """The (biased) autocorrelation of x at lags 0 .. len(x) - 1."""
    n = len(x)
    spectrum = np.fft.rfft(x, 2 * n)
    return np.fft.irfft(np.abs(spectrum) ** 2)[:n]


def _read(ac: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """ac at fractional lags, linearly between frames."""
    whole = np.floor(lags).astype(np.int64)
    frac = lags - whole
    return (1 - frac) * ac[whole] + frac * ac[whole + 1]


def estimate_tempo(audio: np.ndarray, sample_rate: int) -> float | None:
    """audio (channels, samples) or (samples,) -> beats a minute, or None where there is no steady beat to
    measure (silence, less than 3 s, no periodic onsets)."""
    mono = np.asarray(audio, dtype=np.float32)
    mono = mono.mean(axis=0) if mono.ndim == 2 else mono
    mono = np.nan_to_num(mono[:int(LONGEST_SECONDS * sample_rate)])
    if len(mono) < SHORTEST_SECONDS * sample_rate or not np.any(mono):
        return None
    onsets = onset_strength(mono, sample_rate)
    ac = autocorrelation(onsets)
    if len(ac) == 0 or ac[0] <= 0:
        return None
    ac = ac / ac[0]
    low, high = TEMPO_RANGE
    periods = np.arange(60 * FRAME_RATE / high, 60 * FRAME_RATE / low, 0.01)  # frames per beat [P]
    reach = min(LAGS_SECONDS * FRAME_RATE, len(ac) - 2)
    if reach < 2 * periods[0]:
        return None
    multiples = np.arange(1, int(reach / periods[0]) + 1)  # [M]
    beats = periods[:, None] * multiples[None, :]  # [P, M] lags of whole beats
    inside = beats <= reach
    # each beat's lag against the lags a quarter beat either side of its half (where neither beats nor
    # off-beats fall): off-beats do not count against the tempo, and its multiples and fractions score less
    between = [np.where(inside, beats - periods[:, None] * q, 0) for q in (0.25, 0.75)]
    contrast = _read(ac, np.where(inside, beats, 0)) - 0.5 * (_read(ac, between[0]) + _read(ac, between[1]))
    counts = inside.sum(axis=1)
    # the mean contrast times sqrt(beats read): a third of the tempo may have the mean of the tempo itself,
    # but a third of its beats in reach; double the tempo twice the beats, but half of them between beats
    scores = np.where(counts >= 2, (contrast * inside).sum(axis=1) / np.sqrt(np.maximum(counts, 1)), -np.inf)  # [P]
    bpm = 60 * FRAME_RATE / periods
    prior = np.exp(-0.5 * (np.log2(bpm / 120.0) / PRIOR_OCTAVES) ** 2)
    best = int(np.argmax(np.where(scores > 0, scores * (0.9 + 0.1 * prior), -np.inf)))  # ties: nearer 120 bpm
    if not np.isfinite(scores[best]) or scores[best] < MIN_STRENGTH:
        return None
    return float(bpm[best])
