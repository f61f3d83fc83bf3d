"""ACE-Step on CUDA: in float32 the audio of the CPU for the same seed (every noise, the repaint source's draw
included, comes from CPU generators and is moved), and the default half precision runs."""

import numpy as np
import pytest
import torch

import tunesmith

from .test_model import LYRICS
from .test_repaint import song

DEVICE = "cuda"  # the device under test: a scratch copy with "cpu" here runs these bodies on any machine
TOLERANCE = 1e-4

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_model(ace_ckpt):
    return tunesmith.load(ace_ckpt[0], device=DEVICE, dtype="float32")


def same_audio(clips, expected):
    for clip, want in zip(clips, expected, strict=True):
        assert clip.params["device"] == DEVICE and clip.audio.shape == want.audio.shape
        assert np.abs(want.audio).max() > 1e-3 and np.abs(clip.audio - want.audio).max() < TOLERANCE


def test_songs_match_the_cpu(ace_model, gpu_model):
    """Two captions (two DiT batches), two seeds each."""
    kwargs = dict(lyrics=LYRICS, duration=10, seed=7, steps=3, num_variations=2)
    prompts = ["upbeat indie pop, jangly guitars", "garage rock"]
    same_audio(gpu_model.generate(prompts, **kwargs), ace_model.generate(prompts, **kwargs))


def test_repaint_matches_the_cpu(ace_model, gpu_model):
    kwargs = dict(lyrics=LYRICS, audio_prompt=(song(10.0), 48000), repaint=(2.0, 6.0), seed=5, steps=2)
    clips = gpu_model.generate("dream pop", **kwargs)
    same_audio(clips, ace_model.generate("dream pop", **kwargs))
    assert clips[0].params["repaint"] == [2.0, 6.0]


def test_default_half_precision_runs(ace_ckpt):
    model = tunesmith.load(ace_ckpt[0], device=DEVICE)
    if DEVICE == "cuda":
        assert model.dtype == torch.bfloat16  # the H200 computes bfloat16
    for clip in model.generate("tech house groove", lyrics=LYRICS, duration=10, seed=1, steps=2, num_variations=2):
        assert clip.params["device"] == DEVICE and clip.params["dtype"] == str(model.dtype)[6:]
        assert clip.audio.shape == (2, 480000) and np.isfinite(clip.audio).all() and np.abs(clip.audio).max() > 0
