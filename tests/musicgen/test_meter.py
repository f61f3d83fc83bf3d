"""MusicGen's tempo and key: written into the prompt as audiocraft's training merged them; bars set the length."""

import numpy as np

from tunesmith.audio.meter import bars_seconds


def test_bars_and_tempo_through_generate(mono_model):
    clip, = mono_model.generate("calm lofi piano", bpm=150, key="e minor", bars=1, seed=4, temperature=0)
    seconds = bars_seconds(1, 150)  # 1.6 s
    assert clip.audio.shape == (1, round(seconds * 32000)) and clip.duration == seconds
    assert clip.prompt == "calm lofi piano. key: E minor. bpm: 150.0"
    assert (clip.params["bpm"], clip.params["key"], clip.params["bars"]) == (150.0, "E minor", 1)
    # the same as writing the text oneself
    same, = mono_model.generate("calm lofi piano. key: E minor. bpm: 150.0", duration=seconds, seed=4, temperature=0)
    np.testing.assert_array_equal(clip.audio, same.audio)
