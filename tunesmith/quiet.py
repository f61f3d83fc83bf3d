"""Loading without chatter: transformers (and diffusers, for the pipeline folders) report progress,
a pad-id warning on every MusicGen config and torch's weight_norm deprecation while a checkpoint
loads; none of it is news to users. One helper for every family's loader."""

from __future__ import annotations

import contextlib
import warnings


@contextlib.contextmanager
def quiet_loading(diffusers: bool = True):
    """Inside: transformers' (and, with `diffusers`, diffusers') logging at errors only, their progress
    bars off and FutureWarnings ignored; each put back as it was on the way out. diffusers=False for
    MusicGen, which does not import diffusers."""
    from transformers.utils import logging as hf_logging

    libraries = [hf_logging]
    if diffusers:
        from diffusers.utils import logging as diffusers_logging

        libraries.append(diffusers_logging)
    saved = [(lib, lib.get_verbosity(), lib.is_progress_bar_enabled()) for lib in libraries]
    for lib in libraries:
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for lib, level, bars in saved:
            lib.set_verbosity(level)
            if bars:
                lib.enable_progress_bar()
