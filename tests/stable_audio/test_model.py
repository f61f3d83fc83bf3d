"""Stable Audio Open 1.0 (diffusers layout) through tunesmith's StableAudio, against diffusers itself."""

import numpy as np
import pytest
import torch

import tunesmith
from tunesmith.errors import CheckpointError, InvalidParameter, TunesmithError
from tunesmith.models import describe, family_of
from tunesmith.stable_audio.sample import decode, encode_audio

from .cpu_path import check_cpu_path


def reference(pipe, prompt, seed, negative=None, steps=6, seconds=0.3):
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipe(prompt, negative_prompt=negative, num_inference_steps=steps, audio_end_in_s=seconds,
                generator=generator).audios[0].numpy()


@pytest.mark.parametrize("prompt", ["rain on a tin roof", "dusty vinyl hip hop beat, punchy kick, warm ambient pad"])
@pytest.mark.parametrize("negative", [None, "music"])
def test_same_seed_same_audio_as_diffusers(sao_ckpt, sao_model, prompt, negative):
    folder, pipe = sao_ckpt
    clip, = sao_model.generate(prompt, duration=0.3, seed=7, steps=6, negative_prompt=negative)
    expected = reference(pipe, prompt, 7, negative)
    assert clip.audio.shape == expected.shape == (2, 1200)
    np.testing.assert_allclose(clip.audio, expected, atol=1e-5, rtol=0)
    assert clip.sample_rate == 4000 and clip.seed == 7 and clip.check is not None
    assert clip.params["steps"] == 6 and clip.params["cfg"] == 7.0 and clip.params["negative_prompt"] == negative


@pytest.mark.parametrize("dtype, quantize, floor_db", [("bfloat16", None, 38), ("bfloat16", "int8", 33)])
def test_the_cpu_path_stays_close_to_float32(sao_ckpt, sao_model, dtype, quantize, floor_db):
    check_cpu_path(sao_ckpt[0], sao_model, dtype, quantize, floor_db, steps=8)  # about 44 and 41 dB here


def test_each_row_is_its_own_seed_in_any_batch(sao_model):
    a, b, c = sao_model.generate(["rain on a tin roof", "tech house drum loop"], duration=0.2, seed=3, steps=4,
                                 num_variations=2)[:3]
    alone, = sao_model.generate("rain on a tin roof", duration=0.2, seed=4, steps=4)
    np.testing.assert_allclose(b.audio, alone.audio, atol=1e-5, rtol=0)
    assert (a.seed, b.seed, c.seed) == (3, 4, 3) and c.prompt == "tech house drum loop"
    assert np.abs(a.audio - b.audio).max() > 1e-3


def test_defaults_come_from_the_model(sao_model):
    assert sao_model.max_seconds == pytest.approx(256 * 8 / 4000)
    assert describe(sao_model.name).longest == pytest.approx(sao_model.max_seconds)
    clip, = sao_model.generate("slow pad", duration=0.1, seed=1, steps=2)
    assert clip.params["sampler"] == "dpmpp-2m-sde" and clip.params["cfg"] == 7.0 and clip.audio.shape == (2, 400)


def test_strength_zero_returns_the_init_audio_and_one_ignores_it(sao_model):
    rng = np.random.default_rng(0)
    init = (0.3 * np.sin(np.arange(2048) / 4000 * 2 * np.pi * 220) + 0.01 * rng.standard_normal(2048))
    init = np.stack([init, init]).astype(np.float32)
    kept, = sao_model.generate("rain", duration=0.3, seed=2, steps=4, audio_prompt=(init, 4000), strength=0)
    parts = sao_model._parts
    with torch.inference_mode():
        expected = decode(parts, encode_audio(parts, torch.from_numpy(init)[None]))[0, :, :1200].numpy()
    np.testing.assert_allclose(kept.audio, expected, atol=1e-6, rtol=0)
    ignored, = sao_model.generate("rain", duration=0.3, seed=2, steps=4, audio_prompt=(init, 4000), strength=1)
    plain, = sao_model.generate("rain", duration=0.3, seed=2, steps=4)
    np.testing.assert_array_equal(ignored.audio, plain.audio)
    half, = sao_model.generate("rain", duration=0.3, seed=2, steps=4, audio_prompt=(init, 4000), strength=0.5)
    assert half.params["strength"] == 0.5
    assert np.abs(half.audio - plain.audio).max() > 1e-3 and np.abs(half.audio - kept.audio).max() > 1e-3


def test_a_loop_lasts_its_duration_and_finishes(sao_model):
    clip, = sao_model.generate("tech house drum loop", duration=0.3, seed=5, steps=3, loop=True)
    assert clip.audio.shape == (2, 1200) and clip.params["loop"]
    finished = clip.finish(fade_in=0.01, ceiling=-3.0)
    assert finished.audio.shape == (2, 1200) and np.abs(finished.audio).max() <= 10 ** (-3 / 20) + 1e-6


@pytest.mark.parametrize("kwargs, words", [
    (dict(duration=0.6), "0.51 s this model makes at once"),
    (dict(duration=0.5, loop=True), "loop of 0.5 s"),
    (dict(steps=0), "steps (--steps)"),
    (dict(cfg=-1), "cfg (--cfg)"),
    (dict(strength=0.5), "applies to an init audio"),
    (dict(sampler="pingpong"), "dpmpp-2m-sde"),
    (dict(negative_prompt="noise", cfg=1), "needs guidance"),
])
def test_bad_values_are_one_clear_error(sao_model, kwargs, words):
    with pytest.raises(InvalidParameter) as err:
        sao_model.generate("rain", **{"duration": 0.2, **kwargs})
    assert words in str(err.value) and "\n" not in str(err.value)


def test_init_audio_values_are_checked(sao_model, tmp_path):
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    with pytest.raises(TunesmithError) as err:
        sao_model.generate("rain", duration=0.2, audio_prompt=text)
    assert "notes.wav" in str(err.value)
    with pytest.raises(InvalidParameter, match=r"strength \(--strength\)"):
        sao_model.generate("rain", duration=0.2, audio_prompt=(np.ones((2, 800), np.float32), 4000), strength=1.5)
    with pytest.raises(InvalidParameter, match="not an option of Stable Audio models"):
        sao_model.generate_request(tunesmith.request.check_request("rain", family="stable_audio", temperature=0.5))


def test_load_picks_the_family_from_the_files(sao_ckpt, mono_ckpt, tmp_path):
    assert family_of(sao_ckpt[0]) == "stable_audio" and family_of(mono_ckpt[0]) == "musicgen"
    assert isinstance(tunesmith.load(mono_ckpt[0], device="cpu"), tunesmith.MusicGen)
    with pytest.raises(InvalidParameter, match="threds is not a loading option of Stable Audio"):
        tunesmith.load(sao_ckpt[0], device="cpu", threds=2)
    with pytest.raises(InvalidParameter, match="quantize must be None or 'int8' for Stable Audio"):
        tunesmith.load(sao_ckpt[0], device="cpu", quantize="int4")
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    with pytest.raises(CheckpointError, match="StableDiffusionPipeline"):
        tunesmith.load(other)


def test_a_diffusers_folder_with_a_broken_part_is_one_line(sao_ckpt, tmp_path):
    import shutil

    broken = tmp_path / "sao"
    shutil.copytree(sao_ckpt[0], broken)
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"oops")
    with pytest.raises(CheckpointError) as err:
        tunesmith.load(broken, device="cpu")
    assert "transformer" in str(err.value) and "\n" not in str(err.value)
    shutil.rmtree(broken / "vae")
    with pytest.raises(CheckpointError, match="lacks the vae folder"):
        tunesmith.load(broken, device="cpu")


@pytest.mark.parametrize("part, change, words", [
    ("vae", {"encoder_hidden_size": 8}, "the VAE in {folder}/vae is malformed: its encoder makes 4 latent channels "
                                        "(encoder_hidden_size 8), its decoder takes 3 (decoder_input_channels)"),
    ("vae", {"encoder_hidden_size": 10, "decoder_input_channels": 5},
     "the transformer and the VAE in {folder} disagree: the transformer makes 3 latent channels, the VAE's decoder "
     "takes 5"),
    ("transformer", {"in_channels": 4}, "the transformer in {folder} is malformed: it reads 4 latent channels and "
                                        "writes 3"),
])
def test_a_vae_whose_parts_disagree_is_refused_at_load_naming_it(sao_ckpt, tmp_path, part, change, words):
    """From the configs, before any weights (not at the first --init-audio with a tensor-size error), as
    ACE-Step's check does."""
    import json
    import shutil

    folder = tmp_path / "bad"
    shutil.copytree(sao_ckpt[0], folder)
    config = folder / part / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **change}))
    with pytest.raises(CheckpointError) as err:
        tunesmith.load(folder, device="cpu")
    assert str(err.value) == words.format(folder=folder)
