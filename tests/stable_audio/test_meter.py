"""Stable Audio's tempo and key: written into the prompt as its captions carry them; bars set the length."""

import numpy as np

from tunesmith.audio.meter import bars_seconds


def test_bars_and_tempo_through_generate(sao_model):
    seconds = bars_seconds(1, 300, 2)  # 0.4 s: the tiny model makes 0.512 s at most
    clip, = sao_model.generate("tech house drum loop", bpm=300, key="a minor", time_signature=2, bars=1, seed=1, steps=2)
    assert clip.prompt == "tech house drum loop, 300 BPM, A minor"
    assert clip.audio.shape[1] == round(seconds * sao_model.sample_rate) and clip.params["bars"] == 1
    same, = sao_model.generate("tech house drum loop, 300 BPM, A minor", duration=seconds, seed=1, steps=2)
    np.testing.assert_array_equal(clip.audio, same.audio)
