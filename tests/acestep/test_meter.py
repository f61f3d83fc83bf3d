"""ACE-Step's tempo, key and meter: the caption's metadata as AceStepPipeline writes it, and the same song."""

import numpy as np
import torch

from tunesmith.acestep.prompt import caption_text
from tunesmith.audio.meter import Meter, bars_seconds

from .test_model import reference


def test_caption_metadata_is_the_pipelines(ace_ckpt):
    pipe = ace_ckpt[1]
    for meter, (bpm, key, signature) in [(Meter(124.0, "F# minor", 3), (124, "F# minor", "3")),
                                         (Meter(96.0), (96, None, None)), (Meter(key="Bb major"), (None, "Bb major", None)),
                                         (Meter(time_signature=6), (None, None, "6"))]:
        text, _ = pipe._format_prompt("lofi", "", audio_duration=15.48, bpm=bpm, keyscale=key, timesignature=signature)
        assert caption_text("lofi", 15.48, meter=meter) == text
    assert caption_text("lofi", 30.0) == pipe._format_prompt("lofi", "", audio_duration=30.0)[0]  # N/A


def test_meter_reaches_the_model_as_in_diffusers(ace_ckpt, ace_model):
    """bpm, key and meter, and bars setting the length: the pipeline's song for bpm=, keyscale=, timesignature=."""
    seconds = bars_seconds(6, 90, 3)  # 12 s
    clip, = ace_model.generate("waltz on a toy piano", duration=None, bpm=90, key="d minor", time_signature="3/4",
                               bars=6, seed=3, steps=2)
    generator = torch.Generator("cpu").manual_seed(3)
    expected = ace_ckpt[1]("waltz on a toy piano", audio_duration=seconds, num_inference_steps=2, bpm=90,
                           keyscale="D minor", timesignature="3", generator=generator).audios[0].numpy()
    assert clip.audio.shape == (2, round(seconds * 48000))
    np.testing.assert_allclose(clip.audio, expected[:, :clip.audio.shape[1]], atol=1e-5, rtol=0)
    plain = reference(ace_ckpt[1], "waltz on a toy piano", 3, seconds=seconds, steps=2)
    assert np.abs(plain[:, :clip.audio.shape[1]] - clip.audio).max() > 1e-3  # the metadata changes the song
    assert {k: clip.params[k] for k in ("bpm", "key", "time_signature", "bars")} == dict(
        bpm=90.0, key="D minor", time_signature=3, bars=6)
    assert clip.prompt == "waltz on a toy piano"
