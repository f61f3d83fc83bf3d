"""The output check and the tempo estimator as they were at c4ee857, before they were made cheaper: the
plain code that tests/audio/test_check_reference.py holds the cheaper one to, and that
benchmarks/check_cost.py times it against. Thresholds and sizes, the rules that turn measures into problems
(problems_of) and the tempo's unchanged helpers are the package's own; how much is computed at a time is as
it was."""

from __future__ import annotations

import numpy as np

from tunesmith.audio.checks import FFT_HOP, FFT_SIZE, SILENCE_DBFS, CheckResult, problems_of
from tunesmith.audio.tempo import (FRAME_RATE, LAGS_SECONDS, LONGEST_SECONDS, MIN_STRENGTH, PRIOR_OCTAVES,
                                   SHORTEST_SECONDS, TEMPO_RANGE, _read, autocorrelation)
from tunesmith.audio.tempo import FFT_SIZE as TEMPO_FFT_SIZE

CHUNK = 1 << 20  # samples a step, as they were
CHUNK_FRAMES = 2048  # onset spectra a step, as they were (the package's own are fewer now)


def onset_strength(mono: np.ndarray, sample_rate: int) -> np.ndarray:
    """mono [samples] -> spectral flux [frames] at FRAME_RATE frames a second, its local mean removed."""
    hop = sample_rate / FRAME_RATE
    frames = int((len(mono) - TEMPO_FFT_SIZE) / hop) + 1
    if frames < 3:
        return np.zeros(0)
    starts = np.round(np.arange(frames) * hop).astype(np.int64)  # [frames]
    window = np.hanning(TEMPO_FFT_SIZE).astype(np.float32)
    flux, previous = [], None
    for first in range(0, frames, CHUNK_FRAMES):  # bounded memory
        idx = starts[first:first + CHUNK_FRAMES, None] + np.arange(TEMPO_FFT_SIZE)[None]  # [n, TEMPO_FFT_SIZE]
        spectrum = np.log1p(1000.0 * np.abs(np.fft.rfft(mono[idx] * window, axis=1)))  # [n, bins]
        stacked = spectrum if previous is None else np.concatenate([previous[None], spectrum])
        flux.append(np.maximum(np.diff(stacked, axis=0), 0.0).sum(axis=1))  # what rose since the last frame
        previous = spectrum[-1]
    flux = np.concatenate(flux)  # [frames - 1]
    width = int(FRAME_RATE)  # one second of local mean
    return flux - np.convolve(flux, np.ones(width) / width, mode="same")


def reference_tempo(audio: np.ndarray, sample_rate: int) -> float | None:
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


def spectral_flatness(mono: np.ndarray) -> np.ndarray:
    """Flatness (geometric / arithmetic mean of the power spectrum) of each non-silent frame."""
    if mono.size < FFT_SIZE:
        mono = np.pad(mono, (0, FFT_SIZE - mono.size))
    n = 1 + (mono.size - FFT_SIZE) // FFT_HOP
    frames_per_chunk = CHUNK // FFT_HOP
    window = np.hanning(FFT_SIZE).astype(np.float32)
    out = []
    for first in range(0, n, frames_per_chunk):
        count = min(frames_per_chunk, n - first)
        span = mono[first * FFT_HOP : (first + count - 1) * FFT_HOP + FFT_SIZE]
        frames = np.lib.stride_tricks.sliding_window_view(span, FFT_SIZE)[::FFT_HOP][:count] * window
        loud = frames.std(axis=1) > 10 ** (SILENCE_DBFS / 20)
        power = np.abs(np.fft.rfft(frames[loud], axis=1)[:, 1:]) ** 2 + 1e-20  # DC bin left out
        out.append(np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1))
    return np.concatenate(out) if out else np.zeros(0)


def reference_check(audio: np.ndarray, sample_rate: int | None = None) -> CheckResult:
    """audio (channels, samples) float -> CheckResult with every problem found; with the sample rate, its
    tempo measured too (reported, never a problem: whether a model kept the tempo asked is for the caller)."""
    problems = []
    if audio.size == 0:
        return CheckResult(False, ["no samples"])
    nonfinite = int(np.count_nonzero(~np.isfinite(audio)))
    if nonfinite:
        problems.append(f"{nonfinite / audio.size:.1%} of samples are NaN or infinite")
    x = np.nan_to_num(np.asarray(audio, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    channels, length = x.shape
    peak = float(np.abs(x).max())
    energy, sums, flat_tops = 0.0, np.zeros(channels), 0
    for start in range(0, length, CHUNK):
        part = x[:, start : start + CHUNK + 3]  # 3 samples of overlap: runs across chunk edges count once
        body = part[:, : min(CHUNK, length - start)]
        energy += float(np.einsum("ij,ij->", body, body, dtype=np.float64))
        sums += body.sum(axis=1, dtype=np.float64)
        at_peak = np.abs(part) >= peak * (1 - 1e-6)
        flat_top = at_peak[:, 3:] & at_peak[:, 2:-1] & at_peak[:, 1:-2] & at_peak[:, :-3]  # a sine never holds 4
        flat_tops += int(flat_top[:, : body.shape[1]].sum())
    rms = np.sqrt(energy / x.size)
    rms_dbfs = 20 * np.log10(rms) if rms > 0 else float("-inf")
    dc = float(np.abs(sums / length).max())
    clipped = flat_tops / x.size if peak > 0 else 0.0
    flat = spectral_flatness(x.mean(axis=0))
    flatness = float(np.median(flat)) if flat.size else 0.0

    problems += problems_of(peak, rms_dbfs, dc, clipped, flatness)  # the rules on the measures, unchanged
    tempo = None if sample_rate is None or rms_dbfs < SILENCE_DBFS else reference_tempo(x, sample_rate)
    return CheckResult(not problems, problems, peak, rms_dbfs, dc, clipped, flatness, tempo)
