"""Stable Audio's request values, without torch: its own generate options."""

from ..audio.meter import OPTIONS as METER_OPTIONS
from ..audio.meter import Meter

# Its own generate options -> default (None: the checkpoint's own, read when it loads).
OPTIONS = dict(steps=None, cfg=None, negative_prompt=None, sampler=None, strength=None, **METER_OPTIONS)


def meter_prompt(text: str, meter: Meter) -> str:
    """Tempo and key written into a prompt as Stable Audio Open's captions carry them (Freesound's texts and
    Stability's own examples: "128 BPM tech house drum loop"): "<prompt>, 124 BPM, C major"."""
    return ", ".join([text.rstrip().rstrip(","), *([f"{meter.bpm:g} BPM"] if meter.bpm is not None else []),
                      *([meter.key] if meter.key else [])])
