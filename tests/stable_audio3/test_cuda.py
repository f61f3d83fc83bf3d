"""Stable Audio 3 on CUDA: in float32 the audio of the CPU for the same seed (its noise, the ping-pong
steps' included, comes from CPU generators and is moved): text, guided base (Medium's differential
attention), audio-to-audio and repaint; and the default half precision runs."""

import numpy as np
import pytest
import torch

import tunesmith

DEVICE = "cuda"  # the device under test: a scratch copy with "cpu" here runs these bodies on any machine
TOLERANCE = 1e-4
DURATION = 0.25  # seconds: 32 latents of the tiny autoencoder
RATE = 4096

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_model(sa3_ckpt):
    return tunesmith.load(sa3_ckpt[0], device=DEVICE, dtype="float32")


@pytest.fixture(scope="module")
def source(sa3_model):
    """A quarter second of the tiny model's own audio, (channels, samples)."""
    clip, = sa3_model.generate("bright synth", duration=DURATION, seed=11, steps=4)
    return clip.audio


def same_audio(clip, expected):
    assert clip.params["device"] == DEVICE and clip.audio.shape == expected.audio.shape == (2, 1024)
    assert np.abs(expected.audio).max() > 1e-3 and np.abs(clip.audio - expected.audio).max() < TOLERANCE


def test_text_to_audio_matches_the_cpu(sa3_model, gpu_model):
    kwargs = dict(duration=DURATION, seed=3, steps=4, num_variations=2)
    for clip, expected in zip(gpu_model.generate("calm piano", **kwargs), sa3_model.generate("calm piano", **kwargs),
                              strict=True):
        same_audio(clip, expected)


def test_guided_base_model_matches_the_cpu(sa3_base_ckpt, sa3_base_model):
    kwargs = dict(duration=DURATION, seed=1, steps=5, cfg=3.0, negative_prompt="drums")
    clip, = tunesmith.load(sa3_base_ckpt[0], device=DEVICE, dtype="float32").generate("warm pad", **kwargs)
    same_audio(clip, sa3_base_model.generate("warm pad", **kwargs)[0])


@pytest.mark.parametrize("edit", [dict(duration=DURATION, strength=0.4), dict(repaint=(0.05, 0.15))],
                         ids=["strength", "repaint"])
def test_audio_to_audio_and_repaint_match_the_cpu(sa3_model, gpu_model, source, edit):
    kwargs = dict(seed=5, steps=4, audio_prompt=(source, RATE), **edit)  # a repaint lasts as long as its source
    clip, = gpu_model.generate("loud drums", **kwargs)
    same_audio(clip, sa3_model.generate("loud drums", **kwargs)[0])
    assert clip.params.get("strength") == edit.get("strength")
    assert clip.params.get("repaint") == ([list(edit["repaint"])] if "repaint" in edit else None)


@pytest.mark.parametrize("which", ["small", "base"])
def test_default_half_precision_runs(which, sa3_ckpt, sa3_base_ckpt):
    model = tunesmith.load((sa3_ckpt if which == "small" else sa3_base_ckpt)[0], device=DEVICE)
    if DEVICE == "cuda":
        assert model.dtype == torch.bfloat16  # the H200 computes bfloat16
    cfg = 1.0 if which == "small" else 3.0
    for clip in model.generate("calm piano", duration=DURATION, seed=2, steps=4, cfg=cfg, num_variations=2):
        assert clip.params["device"] == DEVICE and clip.params["dtype"] == str(model.dtype)[6:]
        assert clip.audio.shape == (2, 1024) and np.isfinite(clip.audio).all() and np.abs(clip.audio).max() > 0


@pytest.mark.parametrize("which", ["small", "base"])
def test_half_precision_decode_stays_near_float32(which, sa3_ckpt, sa3_base_ckpt):
    """In half precision SAME decodes with half-precision products around float32 attention
    (StableAudio3._decoder_layers): the same latents so decoded come within 30 dB of the float32 layers (on
    the CPU's bfloat16 path these tiny decoders measured 48.5 and 49.6 dB)."""
    from tunesmith.stable_audio3.decode import decode

    model = tunesmith.load((sa3_ckpt if which == "small" else sa3_base_ckpt)[0], device=DEVICE)
    layers = model._decoder_layers()
    assert layers is not None or DEVICE == "cpu"  # on a GPU the mixed layers; on the CPU the loaded forms
    vae = model._parts.vae
    latents = torch.randn(1, model.config.latent_dim, 64, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    samples = 64 * vae.downsampling_ratio
    with torch.no_grad():
        full = decode(vae, latents, samples).cpu().double()
        half = decode(vae, latents, samples, layers=layers).cpu().double()
    assert torch.isfinite(half).all() and full.abs().max() > 1e-3
    snr = 10 * torch.log10(full.pow(2).sum() / (half - full).pow(2).sum().clamp_min(1e-30))
    assert snr > 30, snr
