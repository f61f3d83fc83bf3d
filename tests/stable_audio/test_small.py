"""stable-audio-open-small (stable-audio-tools layout) end to end: tunesmith's StableAudio against a loop
written from stable-audio-tools' definitions (tools_reference: its DiT, number conditioner and Oobleck
decoder on the original state dict; the ping-pong sampler as the issue states it)."""

import numpy as np
import pytest
import torch

import tunesmith
from tunesmith.errors import InvalidParameter

from . import tools_reference as ref
from .cpu_path import check_cpu_path
from .tiny import save_tiny_tools_checkpoint, tiny_tools_config


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sao_small_e2e")
    state = save_tiny_tools_checkpoint(folder)
    return folder, state, tunesmith.load(folder, device="cpu", dtype="float32")


def reference_small(folder, state, prompt, seconds, seed, steps):
    from transformers import AutoTokenizer, T5EncoderModel

    config = tiny_tools_config()
    tokenizer = AutoTokenizer.from_pretrained(folder / "t5")
    t5 = T5EncoderModel.from_pretrained(folder / "t5").eval()
    batch = tokenizer([prompt], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                      return_tensors="pt")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        text = t5(batch.input_ids, attention_mask=batch.attention_mask)[0] * batch.attention_mask[..., None]
        total = ref.number_embedding(state, config, "seconds_total", torch.tensor([seconds]))  # [1, 1, D]
        cross = torch.cat([text, total], dim=1)
        latent = config["model"]["pretransform"]["config"]["latent_dim"]
        x = torch.randn((1, latent, config["sample_size"] // 8), generator=generator)
        t = torch.sigmoid(-torch.linspace(-6, 2, steps + 1))
        t[0], t[-1] = 1.0, 0.0
        for i in range(steps):
            v = ref.dit_forward(state, config, x, t[i:i + 1], cross, total[:, 0])
            denoised = x - t[i] * v
            x = (1 - t[i + 1]) * denoised + t[i + 1] * torch.randn(x.shape, generator=generator)
        audio = ref.vae_decode(state, config, x)
    return audio[0, :, : int(seconds * config["sample_rate"])].numpy()


def test_small_generates_as_stable_audio_tools_defines_it(small):
    folder, state, model = small
    assert isinstance(model, tunesmith.StableAudio) and model.config.sampler == "pingpong"
    clip, = model.generate("rain on a tin roof", duration=0.3, seed=5, steps=4)
    expected = reference_small(folder, state, "rain on a tin roof", 0.3, 5, 4)
    assert clip.audio.shape == expected.shape == (2, 1200) and np.abs(expected).max() > 1e-3
    np.testing.assert_allclose(clip.audio, expected, atol=1e-4, rtol=0)
    assert clip.params["steps"] == 4 and clip.params["cfg"] == 1.0 and clip.params["sampler"] == "pingpong"


def test_small_seeds_euler_and_strength(small):
    model = small[2]
    a, = model.generate("tech house drum loop", duration=0.2, seed=1, steps=3)
    again, = model.generate("tech house drum loop", duration=0.2, seed=1, steps=3)
    other, = model.generate("tech house drum loop", duration=0.2, seed=2, steps=3)
    np.testing.assert_array_equal(a.audio, again.audio)
    assert np.abs(a.audio - other.audio).max() > 1e-4
    euler, = model.generate("tech house drum loop", duration=0.2, seed=1, steps=3, sampler="euler")
    assert euler.params["sampler"] == "euler" and np.abs(euler.audio - a.audio).max() > 1e-5
    init = (a.audio, a.sample_rate)
    kept, = model.generate("rain", duration=0.2, seed=3, steps=3, audio_prompt=init, strength=0)
    ignored, = model.generate("rain", duration=0.2, seed=3, steps=3, audio_prompt=init, strength=1)
    plain, = model.generate("rain", duration=0.2, seed=3, steps=3)
    np.testing.assert_array_equal(ignored.audio, plain.audio)
    assert np.abs(kept.audio - plain.audio).max() > 1e-4
    with pytest.raises(InvalidParameter, match="pingpong or euler"):
        model.generate("rain", duration=0.2, sampler="dpmpp-2m-sde")
    with pytest.raises(InvalidParameter, match="needs guidance"):
        model.generate("rain", duration=0.2, negative_prompt="drums")
    guided, = model.generate("rain", duration=0.2, seed=3, steps=3, cfg=3, negative_prompt="drums")
    assert np.abs(guided.audio - plain.audio).max() > 1e-5


@pytest.mark.parametrize("dtype, quantize, floor_db", [("bfloat16", None, 38), ("bfloat16", "int8", 32)])
def test_small_cpu_path_stays_close_to_float32(small, dtype, quantize, floor_db):
    check_cpu_path(small[0], small[2], dtype, quantize, floor_db)  # about 46 and 39 dB here
