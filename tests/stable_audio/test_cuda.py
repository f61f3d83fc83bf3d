"""Stable Audio Open on CUDA in float32 gives the audio of the reference for the same seed, and the default
half precision runs.

stable-audio-open-small (ping-pong) draws every noise from CPU generators and moves it: its audio on CUDA is
the CPU's. 1.0's DPM-Solver++ SDE draws its Brownian noise on the latents' device (torchsde seeds a generator
there, as diffusers' pipeline does), so on CUDA it is compared with diffusers' pipeline on CUDA."""

import numpy as np
import pytest
import torch

import tunesmith

from .tiny import save_tiny_tools_checkpoint

DEVICE = "cuda"  # the device under test: a scratch copy with "cpu" here runs these bodies on any machine
TOLERANCE = 1e-4

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sao_small_cuda")
    save_tiny_tools_checkpoint(folder)
    return folder


def on_device(folder, dtype="float32"):
    return tunesmith.load(folder, device=DEVICE, dtype=dtype)


def test_open_1_0_is_the_diffusers_pipeline_on_the_same_device(sao_ckpt):
    from diffusers import StableAudioPipeline

    folder = sao_ckpt[0]
    pipe = StableAudioPipeline.from_pretrained(folder).to(DEVICE)  # the session's own stays on the CPU
    pipe.set_progress_bar_config(disable=True)
    clip, = on_device(folder).generate("rain on a tin roof", duration=0.3, seed=7, steps=6, negative_prompt="music")
    expected = pipe("rain on a tin roof", negative_prompt="music", num_inference_steps=6, audio_end_in_s=0.3,
                    generator=torch.Generator("cpu").manual_seed(7)).audios[0].float().cpu().numpy()
    assert clip.params["device"] == DEVICE and clip.audio.shape == expected.shape == (2, 1200)
    assert np.abs(expected).max() > 1e-3 and np.abs(clip.audio - expected).max() < TOLERANCE


@pytest.mark.parametrize("init", [False, True], ids=["text", "audio-to-audio"])
def test_small_matches_the_cpu(small_folder, init):
    cpu, gpu = tunesmith.load(small_folder, device="cpu", dtype="float32"), on_device(small_folder)
    kwargs = dict(duration=0.3, seed=5, steps=4)
    if init:
        source, = cpu.generate("tech house drum loop", duration=0.3, seed=1, steps=3)
        kwargs.update(audio_prompt=(source.audio, source.sample_rate), strength=0.5)
    expected, = cpu.generate("rain on a tin roof", **kwargs)
    clip, = gpu.generate("rain on a tin roof", **kwargs)
    assert clip.params["device"] == DEVICE and clip.audio.shape == expected.audio.shape == (2, 1200)
    assert np.abs(expected.audio).max() > 1e-3 and np.abs(clip.audio - expected.audio).max() < TOLERANCE
    assert clip.params.get("strength") == (0.5 if init else None)


@pytest.mark.parametrize("which", ["open-1.0", "small"])
def test_default_half_precision_runs(which, sao_ckpt, small_folder):
    model = tunesmith.load(sao_ckpt[0] if which == "open-1.0" else small_folder, device=DEVICE)
    if DEVICE == "cuda":
        assert model.dtype == torch.bfloat16  # the H200 computes bfloat16
    clips = model.generate("rain on a tin roof", duration=0.3, seed=3, steps=4, num_variations=2)
    for clip in clips:
        assert clip.params["device"] == DEVICE and clip.params["dtype"] == str(model.dtype)[6:]
        assert clip.audio.shape == (2, 1200) and np.isfinite(clip.audio).all() and np.abs(clip.audio).max() > 0
