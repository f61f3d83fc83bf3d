"""The output check: a clean exit code is not proof that the math was right.

Each clip is measured for non-finite samples, silence, clipping, DC offset and broadband static
(median spectral flatness over time: white noise sits near 0.56, tones and chords near 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .tempo import estimate_tempo, mix_down

SILENCE_DBFS = -60.0  # RMS below this is silence
CLIPPED_FRACTION = 0.001  # share of samples in flat tops (4+ samples in a row at the peak) that means clipping
DC_LIMIT = 0.05  # absolute mean of a channel
STATIC_FLATNESS = 0.3  # median spectral flatness above this is static, not music
FFT_SIZE, FFT_HOP = 2048, 1024


@dataclass
class CheckResult:
    ok: bool
    problems: list[str] = field(default_factory=list)
    peak: float = 0.0
    rms_dbfs: float = float("-inf")
    dc_offset: float = 0.0
    clipped_fraction: float = 0.0
    flatness: float = 0.0
    tempo: float | None = None  # beats a minute as measured (audio/tempo.py); None: no steady beat, or not measured

    def summary(self) -> str:
        return "ok" if self.ok else "; ".join(self.problems)

    def advice(self) -> str:
        """What to do about a failed check, in words every shell shares (the CLI adds its --strict): the file
        is kept, since a listener may still like it. '' when the check passed."""
        if self.ok:
            return ""
        first = self.problems[0]
        if "NaN" in first:
            todo = "try another seed, or full precision (float32) if it happens again"
        elif first.startswith("silent") or first == "no samples":
            todo = "try another seed or a fuller prompt"
        elif first.startswith(("clipped", "peak")):
            todo = "set a loudness target (e.g. -14 LUFS) to bring it under full scale, or try another seed"
        else:  # static, a DC offset: what a model makes now and then
            todo = "try another seed"
        return f"the file was kept; {todo}"


CHUNK = 1 << 20  # samples per step: long pieces are measured in bounded memory
FRAMES_AT_ONCE = 128  # flatness spectra a step: their passes run faster while they stay in the CPU's cache


def spectral_flatness(mono: np.ndarray) -> np.ndarray:
    """Flatness (geometric / arithmetic mean of the power spectrum) of each non-silent frame."""
    if mono.size < FFT_SIZE:
        mono = np.pad(mono, (0, FFT_SIZE - mono.size))
    n = 1 + (mono.size - FFT_SIZE) // FFT_HOP
    window = np.hanning(FFT_SIZE)  # float64 frames: numpy's float32 FFT is the slower one (tempo.py)
    silent = 10 ** (SILENCE_DBFS / 10)  # a frame's variance at or below this (its RMS below -60 dBFS)
    out = []
    for first in range(0, n, FRAMES_AT_ONCE):
        count = min(FRAMES_AT_ONCE, n - first)
        span = mono[first * FFT_HOP : (first + count - 1) * FFT_HOP + FFT_SIZE]
        frames = np.lib.stride_tricks.sliding_window_view(span, FFT_SIZE)[::FFT_HOP][:count] * window
        spectrum = np.fft.rfft(frames, axis=1)[:, 1:]  # [count, bins]: the DC bin left out
        power = np.abs(spectrum, out=np.empty(spectrum.shape, np.float32))  # float32 again from here
        np.square(power, out=power)
        # Parseval: a frame's variance is the energy of its spectrum without the DC bin (each bin but the
        # last, Nyquist, stands for two), so the silent frames are found without a pass of their own
        loud = (2 * power.sum(axis=1) - power[:, -1]) / FFT_SIZE**2 > silent
        power += 1e-20
        mean = power.mean(axis=1)
        flatness = np.exp(np.log(power, out=power).mean(axis=1)) / mean
        out.append(flatness if loud.all() else flatness[loud])
    return np.concatenate(out) if out else np.zeros(0)


def count_flat_tops(x: np.ndarray, start: int, level: np.float32) -> int:
    """Runs of 4 samples at `level` or louder that begin in x[:, start : start + CHUNK]."""
    part = x[:, start : start + CHUNK + 3]  # 3 samples of overlap: runs across chunk edges count once
    at_peak = np.abs(part) >= level
    flat_top = at_peak[:, 3:] & at_peak[:, 2:-1] & at_peak[:, 1:-2] & at_peak[:, :-3]  # a sine never holds 4
    return int(flat_top[:, :CHUNK].sum())


def check_audio(audio: np.ndarray, sample_rate: int | None = None) -> CheckResult:
    """audio (channels, samples) float -> CheckResult with every problem found; with the sample rate, its
    tempo measured too (reported, never a problem: whether a model kept the tempo asked is for the caller)."""
    problems = []
    if audio.size == 0:
        return CheckResult(False, ["no samples"])
    nonfinite = int(np.count_nonzero(~np.isfinite(audio)))
    if nonfinite:
        problems.append(f"{nonfinite / audio.size:.1%} of samples are NaN or infinite")
    x = np.asarray(audio, dtype=np.float32)
    if nonfinite or x is not audio:  # float32 audio with nothing to mend is read as it is (a cast may overflow)
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    channels, length = x.shape
    energy, sums, peaks = 0.0, np.zeros(channels), []
    for start in range(0, length, CHUNK):
        body = x[:, start : start + CHUNK]
        energy += float(np.einsum("ij,ij->", body, body, dtype=np.float64))
        sums += body.sum(axis=1, dtype=np.float64)
        peaks.append(max(float(body.max()), -float(body.min())))
    peak = max(peaks)
    level = np.float32(peak * (1 - 1e-6))  # a sample this loud is at the peak
    # flat tops are looked for only in the chunks that reach the peak: one, unless the audio is clipped
    reach = [start for start, top in zip(range(0, length, CHUNK), peaks) if top >= level] if peak > 0 else []
    flat_tops = sum(count_flat_tops(x, start, level) for start in reach)
    rms = np.sqrt(energy / x.size)
    rms_dbfs = 20 * np.log10(rms) if rms > 0 else float("-inf")
    dc = float(np.abs(sums / length).max())
    clipped = flat_tops / x.size if peak > 0 else 0.0
    mono = mix_down(x)  # once: the tempo reads it too
    flat = spectral_flatness(mono)
    flatness = float(np.median(flat)) if flat.size else 0.0
    problems += problems_of(peak, rms_dbfs, dc, clipped, flatness)
    tempo = None if sample_rate is None or rms_dbfs < SILENCE_DBFS else estimate_tempo(mono, sample_rate)
    return CheckResult(not problems, problems, peak, rms_dbfs, dc, clipped, flatness, tempo)


def problems_of(peak: float, rms_dbfs: float, dc: float, clipped: float, flatness: float) -> list[str]:
    """What a clip's measures say is wrong with it, one line each (non-finite samples are counted apart)."""
    problems = []
    if rms_dbfs < SILENCE_DBFS:
        problems.append(f"silent (RMS {rms_dbfs:.0f} dBFS)")
    else:
        if clipped > CLIPPED_FRACTION:
            problems.append(f"clipped ({clipped:.1%} of samples in flat tops at {peak:.2f})")
        elif peak > 1.0:
            problems.append(f"peak {peak:.2f} is above full scale and will clip when written")
        if flatness > STATIC_FLATNESS:
            problems.append(f"sounds like broadband static (spectral flatness {flatness:.2f})")
    if dc > DC_LIMIT:
        problems.append(f"DC offset {dc:.2g}")
    return problems
