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
CHUNK_FRAMES = 256  # spectra computed at a time: few enough for their passes to stay in the CPU cache
TEMPO_RANGE = (40.0, 240.0)  # bpm searched
LAGS_SECONDS = 6.0  # multiples of the period are read up to this lag
LONGEST_SECONDS = 60.0  # the first minute is enough to measure
SHORTEST_SECONDS = 3.0  # fewer beats than this say nothing
MIN_STRENGTH = 0.1  # best score / autocorrelation at lag 0: weaker is no steady beat
PRIOR_OCTAVES = 1.0  # the 120 bpm preference's width (log2 bpm standard deviation)


def mix_down(x: np.ndarray) -> np.ndarray:
    """(channels, samples) -> their mean: x.mean(axis=0), the channels summed in the same order, but row by
    row (numpy's reduction across rows is several times slower)."""
    if len(x) == 1:
        return x[0]
    mono = x[0] + x[1]
    for row in x[2:]:
        mono += row
    mono /= len(x)
    return mono


def log1p(y: np.ndarray) -> np.ndarray:
    """np.log1p(y) to a few float32 roundings, at a third of its cost in float32: log(1 + y) loses what
    1 + y rounds off (all of a y below 6e-8), and (y - (u - 1)) / u puts it back."""
    u = y + 1.0
    return np.log(u) + (y - (u - 1.0)) / u


def frame_starts(length: int, sample_rate: int) -> np.ndarray:
    """The first sample of each onset frame: FRAME_RATE a second, rounded (half to even) where the hop is
    fractional (220.5 samples at 44.1 kHz)."""
    hop = sample_rate / FRAME_RATE
    frames = int((length - FFT_SIZE) / hop) + 1
    return np.round(np.arange(max(frames, 0)) * hop).astype(np.int64)


def onset_strength(mono: np.ndarray, sample_rate: int) -> np.ndarray:
    """mono [samples] -> spectral flux [frames] at FRAME_RATE frames a second, its local mean removed."""
    starts = frame_starts(len(mono), sample_rate)
    if len(starts) < 3:
        return np.zeros(0)
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(mono, np.float32), FFT_SIZE)  # no copy
    step = int(starts[1])
    whole = np.array_equal(starts, step * np.arange(len(starts)))  # 48 kHz: 240 samples; 44.1 kHz: 220.5
    window = np.hanning(FFT_SIZE)
    # frames in float64: numpy's (2.4) float32 FFT took 1.5 to 6 times as long a frame as its float64 one
    frames = np.empty((min(CHUNK_FRAMES, len(starts)), FFT_SIZE))  # [n, FFT_SIZE]
    # row 0: the spectrum before the chunk's first (the first chunk's first frame has none: no flux)
    spectra = np.empty((len(frames) + 1, FFT_SIZE // 2 + 1), np.float32)  # [1 + n, bins]
    flux = []
    for first in range(0, len(starts), CHUNK_FRAMES):  # bounded memory
        chunk = starts[first:first + CHUNK_FRAMES]
        n = len(chunk)
        # a whole hop reads the frames through a strided view; a fractional one gathers them, row by row
        np.multiply(windows[chunk[0]:chunk[-1] + 1:step] if whole else windows[chunk], window, out=frames[:n])
        spectrum = spectra[1:n + 1]
        np.abs(np.fft.rfft(frames[:n], axis=1), out=spectrum)  # back to float32 from here
        spectrum *= 1000.0
        spectrum[...] = log1p(spectrum)
        rise = np.diff(spectra[:n + 1] if first else spectrum, axis=0)  # what rose since the last frame
        flux.append(np.maximum(rise, 0.0, out=rise).sum(axis=1))
        spectra[0] = spectrum[-1]
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
    mono = np.asarray(audio, dtype=np.float32)[..., :int(LONGEST_SECONDS * sample_rate)]
    mono = mix_down(mono) if mono.ndim == 2 else mono
    if not np.isfinite(mono).all():  # a copy only where there is something to mend
        mono = np.nan_to_num(mono)
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
    lags = beats[inside]  # [K] only the beats in reach are read: about a third of [P, M]
    period = np.broadcast_to(periods[:, None], beats.shape)[inside]  # [K]
    # each beat's lag against the lags a quarter beat either side of its half (where neither beats nor
    # off-beats fall): off-beats do not count against the tempo, and its multiples and fractions score less
    contrast = np.zeros(beats.shape)  # [P, M], 0 out of reach: each row sums as it did with them all read
    contrast[inside] = _read(ac, lags) - 0.5 * (_read(ac, lags - period * 0.25) + _read(ac, lags - period * 0.75))
    counts = inside.sum(axis=1)
    # the mean contrast times sqrt(beats read): a third of the tempo may have the mean of the tempo itself,
    # but a third of its beats in reach; double the tempo twice the beats, but half of them between beats
    scores = np.where(counts >= 2, contrast.sum(axis=1) / np.sqrt(np.maximum(counts, 1)), -np.inf)  # [P]
    bpm = 60 * FRAME_RATE / periods
    prior = np.exp(-0.5 * (np.log2(bpm / 120.0) / PRIOR_OCTAVES) ** 2)
    best = int(np.argmax(np.where(scores > 0, scores * (0.9 + 0.1 * prior), -np.inf)))  # ties: nearer 120 bpm
    if not np.isfinite(scores[best]) or scores[best] < MIN_STRENGTH:
        return None
    return float(bpm[best])
