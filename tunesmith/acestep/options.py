"""ACE-Step's request values, without torch: its own generate options and the song lengths it makes."""

from ..audio.meter import OPTIONS as METER_OPTIONS

SHORTEST, LONGEST = 10.0, 600.0  # seconds: the range ACE-Step 1.5 was trained on (10 s to 10 min)

# Its own generate options -> default (None: the checkpoint's own, read when it loads).
# bpm, key, time_signature: the caption's metadata (bpm, keyscale, timesignature; N/A when not given).
OPTIONS = dict(lyrics=None, language=None, steps=None, cfg=None, repaint=None, **METER_OPTIONS)
