"""Stable Audio 3's request values, without torch: its own generate options."""

# Its own generate options -> default (None: the checkpoint's own, read when it loads).
# repaint: (start, end) seconds of audio_prompt to make anew, or a list of such spans; continuation: audio to
# keep and extend to the duration.
OPTIONS = dict(steps=None, cfg=None, negative_prompt=None, strength=None, repaint=None, continuation=None)
