"""tunesmith's Stable Audio 3 on a diffusers-layout folder gives the audio of diffusers' own pipelines
(StableAudio3Pipeline, StableAudio3AudioToAudioPipeline, StableAudio3InpaintPipeline) for the same seed,
on the CPU in float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

TOLERANCE = 2e-5
DURATION = 0.25  # seconds: 32 latents of the tiny autoencoder


def seeded(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def pipeline_audio(pipe, prompt: str, seed: int, **kwargs) -> np.ndarray:
    return pipe(prompt, generator=seeded(seed), **kwargs).audios[0].numpy()


def test_text_to_audio_equals_the_pipeline(sa3_ckpt, sa3_model):
    _, pipe = sa3_ckpt
    clip, = sa3_model.generate("calm piano", duration=DURATION, seed=3, steps=4)
    expected = pipeline_audio(pipe, "calm piano", 3, duration=DURATION, num_inference_steps=4)
    assert clip.audio.shape == expected.shape == (2, 1024)
    assert np.abs(clip.audio - expected).max() < TOLERANCE
    # the comparison means something: another text and another seed each move the audio
    for prompt, seed in (("loud drums", 3), ("calm piano", 4)):
        other = pipeline_audio(pipe, prompt, seed, duration=DURATION, num_inference_steps=4)
        assert np.abs(other - expected).max() > 0.02
    assert clip.params["steps"] == 4 and clip.params["cfg"] == 1.0 and clip.params["licence"] is None


def test_default_steps_and_variations_equal_the_pipeline(sa3_ckpt, sa3_model):
    """Eight ping-pong steps by default; variation v uses seed + v, as a list of generators does."""
    _, pipe = sa3_ckpt
    clips = sa3_model.generate("rain on a tin roof", duration=0.2, seed=7, num_variations=2)
    expected = pipe("rain on a tin roof", duration=0.2, num_waveforms_per_prompt=2,
                    generator=[seeded(7), seeded(8)]).audios.numpy()
    assert [c.seed for c in clips] == [7, 8] and clips[0].params["steps"] == 8
    assert np.abs(np.stack([c.audio for c in clips]) - expected).max() < TOLERANCE
    assert np.abs(expected[0] - expected[1]).max() > 0.02


def test_guided_base_model_equals_the_pipeline(sa3_base_ckpt, sa3_base_model):
    """A base checkpoint (differential attention, as Medium): Euler steps, guidance from the empty prompt or
    from a negative prompt."""
    _, pipe = sa3_base_ckpt
    clip, = sa3_base_model.generate("warm pad", duration=DURATION, seed=1, steps=5, cfg=3.0)
    expected = pipeline_audio(pipe, "warm pad", 1, duration=DURATION, num_inference_steps=5, guidance_scale=3.0)
    assert np.abs(clip.audio - expected).max() < TOLERANCE
    clip, = sa3_base_model.generate("warm pad", duration=DURATION, seed=1, steps=5, cfg=3.0, negative_prompt="drums")
    negative = pipeline_audio(pipe, "warm pad", 1, duration=DURATION, num_inference_steps=5, guidance_scale=3.0,
                              negative_prompt="drums")
    assert np.abs(clip.audio - negative).max() < TOLERANCE
    assert np.abs(negative - expected).max() > 0.02


def source_audio(pipe) -> np.ndarray:
    """A quarter second of the tiny model's own audio: (channels, samples) at its rate."""
    return pipeline_audio(pipe, "bright synth", 11, duration=DURATION, num_inference_steps=4)


@pytest.mark.parametrize("strength", [0.4, 1.0])
def test_audio_to_audio_equals_the_pipeline(sa3_ckpt, sa3_model, strength):
    from diffusers import StableAudio3AudioToAudioPipeline

    _, pipe = sa3_ckpt
    source = source_audio(pipe)
    clip, = sa3_model.generate("calm piano", duration=DURATION, seed=5, steps=4, audio_prompt=(source, 4096),
                               strength=strength)
    a2a = StableAudio3AudioToAudioPipeline(**pipe.components)
    a2a.set_progress_bar_config(disable=True)
    expected = pipeline_audio(a2a, "calm piano", 5, duration=DURATION, num_inference_steps=4,
                              audio=torch.from_numpy(source)[None], init_noise_level=strength)
    assert np.abs(clip.audio - expected).max() < TOLERANCE
    assert clip.params["strength"] == strength


def test_strength_zero_gives_back_the_init_audio_as_the_autoencoder_renders_it(sa3_ckpt, sa3_model):
    _, pipe = sa3_ckpt
    source = source_audio(pipe)
    clip, = sa3_model.generate("calm piano", duration=DURATION, seed=5, audio_prompt=(source, 4096), strength=0.0)
    with torch.no_grad():
        rendered = pipe.vae.decode(pipe.vae.encode(torch.from_numpy(source)[None]).latents).sample[0]
    assert np.abs(clip.audio - rendered.clamp(-1, 1).numpy()).max() < TOLERANCE


@pytest.mark.parametrize("spans", [(0.05, 0.15), [(0.0, 0.05), (0.15, 0.25)]], ids=["one span", "two spans"])
def test_repaint_equals_the_inpaint_pipeline(sa3_ckpt, sa3_model, spans):
    from diffusers import StableAudio3InpaintPipeline

    _, pipe = sa3_ckpt
    source = source_audio(pipe)
    clip, = sa3_model.generate("loud drums", seed=9, steps=4, audio_prompt=(source, 4096), repaint=spans)
    inpaint = StableAudio3InpaintPipeline(**pipe.components)
    inpaint.set_progress_bar_config(disable=True)
    pairs = [spans] if isinstance(spans, tuple) else spans
    expected = pipeline_audio(inpaint, "loud drums", 9, duration=DURATION, num_inference_steps=4,
                              audio=torch.from_numpy(source)[None], mask_start_seconds=[a for a, _ in pairs],
                              mask_end_seconds=[b for _, b in pairs])
    assert clip.params["duration"] == DURATION  # the source's length
    assert np.abs(clip.audio - expected).max() < TOLERANCE
    assert clip.params["repaint"] == [list(p) for p in pairs]
    # the spans matter: repainting others gives other audio
    other, = sa3_model.generate("loud drums", seed=9, steps=4, audio_prompt=(source, 4096), repaint=(0.15, 0.25))
    assert np.abs(other.audio - clip.audio).max() > 0.02


def test_continuation_is_the_inpaint_pipeline_after_the_audio(sa3_ckpt, sa3_model):
    """Extending 0.125 s to 0.25 s: the inpaint pipeline with the span after the audio masked."""
    from diffusers import StableAudio3InpaintPipeline

    _, pipe = sa3_ckpt
    source = source_audio(pipe)[:, :512]
    clip, = sa3_model.generate("calm piano", duration=DURATION, seed=2, steps=4, continuation=(source, 4096))
    inpaint = StableAudio3InpaintPipeline(**pipe.components)
    inpaint.set_progress_bar_config(disable=True)
    expected = pipeline_audio(inpaint, "calm piano", 2, duration=DURATION, num_inference_steps=4,
                              audio=torch.from_numpy(source)[None], mask_start_seconds=0.125,
                              mask_end_seconds=DURATION)
    assert clip.audio.shape == (2, 1024)
    assert np.abs(clip.audio - expected).max() < TOLERANCE
    assert clip.params["repaint"] == [[0.125, DURATION]]


def test_a_folder_with_another_scheduler_is_one_line(sa3_ckpt, tmp_path):
    """Later diffusers write their own Stable Audio 3 schedulers, whose time steps this sampler does not read."""
    import json
    import shutil

    import tunesmith
    from tunesmith.errors import CheckpointError

    folder = tmp_path / "later"
    shutil.copytree(sa3_ckpt[0], folder)
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "_class_name": "PingPongScheduler"}))
    with pytest.raises(CheckpointError, match=r"holds a PingPongScheduler: tunesmith reads Stable Audio 3 folders "
                                              r"with diffusers 0.42's FlowMatchEulerDiscreteScheduler"):
        tunesmith.load(folder, device="cpu", dtype="float32")


def test_each_distinct_text_is_encoded_once(sa3_model):
    calls = []
    encoder = sa3_model._parts.text_encoder
    hook = encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        sa3_model.generate(["calm piano", "loud drums"], duration=0.1, seed=1, steps=1, num_variations=3)
    finally:
        hook.remove()
    assert calls == [2]  # six rows, two texts, one pass


def test_rotary_positions_stay_float32_in_half_precision(sa3_ckpt):
    """A DiT cast to bfloat16 (CUDA's default) keeps its rotary frequencies, and so its positions, in float32."""
    from tunesmith.stable_audio3.diffusers_layout import load_diffusers_folder

    parts = load_diffusers_folder(sa3_ckpt[0], torch.device("cpu"), torch.bfloat16)
    rotary = parts.transformer.rotary_pos_emb
    reference = sa3_ckpt[1].transformer.rotary_pos_emb
    assert parts.transformer.dtype == torch.bfloat16 and rotary.inv_freq.dtype == torch.float32
    assert torch.equal(rotary.inv_freq, reference.inv_freq)
    assert torch.equal(rotary(1500, torch.device("cpu")), reference(1500, torch.device("cpu")))  # position 1499 exact
    assert not torch.equal(rotary.inv_freq.bfloat16().float(), reference.inv_freq)  # what a plain cast would hold


def test_a_loop_lasts_exactly_its_duration(sa3_model):
    clip, = sa3_model.generate("warm pad", duration=0.3, seed=2, steps=2, loop=True)
    assert clip.audio.shape == (2, round(0.3 * 4096)) and clip.params["loop"] is True
