"""Stable Audio's request values, without torch: its own generate options."""

# Its own generate options -> default (None: the checkpoint's own, read when it loads).
OPTIONS = dict(steps=None, cfg=None, negative_prompt=None, sampler=None, strength=None)
