"""Tempo, key and meter as a request gives them, and lengths counted in bars.

A bar lasts beats * 60 / bpm seconds, where beats is the meter's number: 2, 3 or 4 (2/4, 3/4, 4/4) or 6
(6/8, its eighths counted as beats, as ACE-Step's metadata counts them). 8 bars at 124 bpm in 4/4 are
8 * 4 * 60 / 124 = 15.484 s, and repeat on the beat in a DAW set to 124 bpm.
"""

from __future__ import annotations

import logging
import math
import numbers
import re
from dataclasses import dataclass

from ..params import refuse

log = logging.getLogger("tunesmith")

BPM_RANGE = (30.0, 300.0)  # ACE-Step 1.5's metadata range; slower or faster is another note value's tempo
METERS = {2: "2/4", 3: "3/4", 4: "4/4", 6: "6/8"}  # beats per bar -> how it is written
MAX_BARS = 1000
KEY = re.compile(r"\s*([A-Ga-g])\s*([#♯b♭]?)\s*(major|minor|maj|min)\s*", re.IGNORECASE)
# The options (tunesmith.params.METER, common to every family) are named in refusals as fields: "{bpm}" is
# `bpm (--bpm)` to the API and the CLI, `bpm` to the server.


@dataclass(frozen=True)
class Meter:
    """What a request says of the music's time and pitch; None: left to the model."""

    bpm: float | None = None
    key: str | None = None  # "C major", "F# minor", "Bb major": tonic (# or b) and mode
    time_signature: int | None = None  # beats per bar: 2, 3, 4 or 6
    bars: int | None = None  # the piece's length in bars, when it was asked that way

    @property
    def beats(self) -> int:
        """Beats per bar (4 when the meter is not given)."""
        return self.time_signature or 4

    def bar_seconds(self) -> float:
        return self.beats * 60.0 / self.bpm

    @property
    def meter_text(self) -> str | None:
        return None if self.time_signature is None else METERS[self.time_signature]

    def params(self) -> dict:
        """The values given, as clips' params record them."""
        return {k: v for k, v in (("bpm", self.bpm), ("key", self.key), ("time_signature", self.time_signature),
                                  ("bars", self.bars)) if v is not None}


def bars_seconds(bars: int, bpm: float, beats: int = 4) -> float:
    """The exact length of `bars` bars: bars * beats * 60 / bpm seconds."""
    return bars * beats * 60.0 / bpm


def check_key(key) -> str:
    """"f# MINOR", "Bb maj", "C♯ minor" -> "F# minor", "Bb major", "C# minor"; anything else one line."""
    m = KEY.fullmatch(key) if isinstance(key, str) else None
    if m is None:
        raise refuse("{key} must be a tonic and a mode, such as \"C major\", \"F# minor\" or \"Bb major\", got "
                     "{value!r}", "key", value=key)
    accidental = {"♯": "#", "♭": "b"}.get(m[2], m[2].lower())
    mode = "major" if m[3].lower().startswith("maj") else "minor"
    return f"{m[1].upper()}{accidental} {mode}"


def check_time_signature(value) -> int:
    """2, 3, 4, 6 or "2/4", "3/4", "4/4", "6/8" (the numerator: 6/8 counts its eighths) -> beats per bar."""
    written = {text: beats for beats, text in METERS.items()}
    if isinstance(value, str) and re.sub(r"\s*/\s*", "/", value.strip()) in written:
        return written[re.sub(r"\s*/\s*", "/", value.strip())]
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) in METERS:
        return int(value)
    raise refuse("{time_signature} must be 2, 3, 4 or 6 beats per bar ({meters}), got {value!r}", "time_signature",
                 meters=", ".join(METERS.values()), value=value)


def check_meter(bpm=None, key=None, time_signature=None, bars=None, *, duration=None, default: float = 10.0,
                loop: bool = False, repaint: bool = False, shortest: float = 0.0) -> tuple[Meter | None, float | None]:
    """The meter options checked -> (Meter or None when none is given, the duration). bars (with bpm) sets the
    duration exactly, and a duration given too must agree; a loop with a bpm and no bars is snapped to the
    nearest whole number of bars of its duration (`default` when None), one at least and no fewer than
    the model's `shortest` seconds take."""
    if bpm is None and key is None and time_signature is None and bars is None:
        return None, duration
    low, high = BPM_RANGE
    if bpm is not None:
        if not (isinstance(bpm, numbers.Real) and not isinstance(bpm, bool) and math.isfinite(bpm)
                and low <= bpm <= high):
            raise refuse("{bpm} must be a tempo from {low:g} to {high:g} beats a minute, got {value!r}", "bpm",
                         low=low, high=high, value=bpm)
        bpm = float(bpm)
    key = None if key is None else check_key(key)
    time_signature = None if time_signature is None else check_time_signature(time_signature)
    if bars is not None:
        if not (isinstance(bars, numbers.Integral) and not isinstance(bars, bool) and 1 <= bars <= MAX_BARS):
            raise refuse("{bars} must be a whole number of bars from 1 to {most}, got {value!r}", "bars",
                         most=MAX_BARS, value=bars)
        if bpm is None:
            raise refuse("{bars} needs {bpm}: the tempo sets a bar's length", "bars")
        if repaint:
            raise refuse("{bars} does not apply to a repaint: it keeps its song's length", "bars")
        bars = int(bars)
    meter = Meter(bpm, key, time_signature, bars)
    if bars is not None:
        seconds = bars_seconds(bars, bpm, meter.beats)
        if duration is not None:
            given = duration if isinstance(duration, numbers.Real) and not isinstance(duration, bool) else None
            if given is None or abs(float(given) - seconds) > 1e-3:
                raise refuse("{duration} {given!r} s and {bars} {count} at {tempo:g} bpm ({seconds:.3f} s) disagree: "
                             "give one of them", "duration", given=duration, count=bars, tempo=bpm, seconds=seconds)
        return meter, seconds
    if loop and bpm is not None:
        duration = default if duration is None else duration
        if not (isinstance(duration, numbers.Real) and not isinstance(duration, bool) and duration > 0):
            return meter, duration  # refused by the duration's own check
        bar = meter.bar_seconds()
        whole = max(1, round(duration / bar), math.ceil(shortest / bar - 1e-9))
        snapped = whole * bar
        if abs(snapped - duration) > 1e-6:
            log.info("a loop of %g s at %g bpm is snapped to %d whole bars: %.3f s", duration, bpm, whole, snapped)
        return Meter(bpm, key, time_signature, whole), snapped
    return meter, duration
