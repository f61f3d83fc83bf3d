"""What the output check (tunesmith.audio.checks.check_audio, tempo included) costs a clip, beside the
plain code it replaced (tests/audio/reference_checks.py): the same signals, the same process, runs
interleaved (every other run in reverse order): the median of --runs, and the median of the runs'
speedups.

    python -m benchmarks.check_cost --runs 7 --markdown BENCHMARKS.md

Two signals per length: white noise (fails as static, but is measured in full) and music of a sort
(chords, a beat of clicks, a little noise). The last column says whether both gave the same report:
the same problems, peak, RMS, DC and flatness within 1e-6 relative, the tempo within 0.05 bpm.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from tunesmith.audio.checks import check_audio

CLIPS = (  # seconds, sample rate, channels: MusicGen, Stable Audio Open, ACE-Step, Stable Audio 3
    (10, 32000, 1),
    (30, 44100, 2),
    (60, 48000, 2),
    (120, 44100, 2),
)


def noise(seconds: float, rate: int, channels: int, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal((channels, int(seconds * rate)))).astype(np.float32)


def music(seconds: float, rate: int, channels: int, seed: int = 0, bpm: float = 124.0) -> np.ndarray:
    """Triads that change every bar, a 10 ms click on every beat, a little noise; peak 0.8."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    beat = 60.0 / bpm
    roots = np.array([220.0, 174.6, 261.6, 196.0])[(t // (4 * beat)).astype(int) % 4]
    phase = 2 * np.pi * np.cumsum(roots) / rate
    audio = sum(np.sin(phase * r) for r in (1.0, 1.26, 1.5)) / 3
    ping = np.exp(-np.arange(480) / 60) * np.sin(2 * np.pi * 1500 * np.arange(480) / rate)
    for k in range(int(seconds / beat)):
        i = round(k * beat * rate)
        audio[i:i + len(ping)] += (1.5 if k % 4 == 0 else 1.0) * ping[: n - i]
    rng = np.random.default_rng(seed)
    audio = np.stack([audio] * channels) + 0.01 * rng.standard_normal((channels, n))
    return (0.8 * audio / np.abs(audio).max()).astype(np.float32)


def same_report(a, b) -> bool:
    close = all(abs(x - y) <= 1e-6 * max(abs(x), abs(y)) or x == y
                for x, y in ((a.peak, b.peak), (a.rms_dbfs, b.rms_dbfs), (a.dc_offset, b.dc_offset),
                             (a.flatness, b.flatness), (a.clipped_fraction, b.clipped_fraction)))
    tempo = a.tempo == b.tempo or None not in (a.tempo, b.tempo) and abs(a.tempo - b.tempo) <= 0.05
    return a.problems == b.problems and close and tempo


def timed(check, audio, rate) -> tuple[float, object]:
    start = time.perf_counter()
    result = check(audio, rate)
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None):
    from tests.audio.reference_checks import reference_check

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", default=",".join(str(c[0]) for c in CLIPS),
                        help="which of the clip lengths to time (comma-separated)")
    parser.add_argument("--markdown", help="append the table to this file")
    args = parser.parse_args(argv)
    wanted = {float(s) for s in args.seconds.split(",")}
    lines = ["| clip | signal | before (ms) | check_audio (ms) | speedup | same report |",
             "|---|---|---:|---:|---:|---|"]
    for seconds, rate, channels in (c for c in CLIPS if c[0] in wanted):
        for name, make in (("noise", noise), ("music", music)):
            audio = make(seconds, rate, channels)
            times = {reference_check: [], check_audio: []}
            results = {}
            for run in range(args.runs + 1):  # the first run of each warms up and is not counted
                for check in (reference_check, check_audio)[:: 1 if run % 2 else -1]:
                    spent, results[check] = timed(check, audio, rate)
                    if run:
                        times[check].append(spent)
            before, after = (statistics.median(times[c]) for c in (reference_check, check_audio))
            # the speedup from each run's pair: a machine that slows down for a while slows both alike
            speedup = statistics.median(b / a for b, a in zip(times[reference_check], times[check_audio]))
            clip = f"{seconds} s, {rate / 1000:g} kHz {'stereo' if channels == 2 else 'mono'}"
            same = "yes" if same_report(results[reference_check], results[check_audio]) else "NO"
            lines.append(f"| {clip} | {name} | {1e3 * before:.0f} | {1e3 * after:.0f} | {speedup:.1f}x | {same} |")
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        with open(args.markdown, "a") as out:
            out.write(f"\n### check_audio, {args.runs} runs\n\n{table}\n")


if __name__ == "__main__":
    main()
