"""Parity with transformers' MusicgenForConditionalGeneration on the same tiny checkpoints."""

import numpy as np
import pytest
import torch

from tunesmith.musicgen.codec import decode_codes
from tunesmith.musicgen.generate import generate_codes
from tunesmith.musicgen.sampling import SamplingParams

from ..checkpoints import reference_generate

PROMPTS = ["calm lofi piano", "deep house with a hypnotic bassline and bossa nova guitar, 80 bpm"]


def _reference_logits(ref, tokens, codes):
    B, K, T = codes.shape
    with torch.no_grad():
        out = ref(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                  decoder_input_ids=codes.reshape(B * K, T))
    return out.logits.view(B, K, T, -1)


@pytest.mark.parametrize("which", ["mono_ckpt", "stereo_ckpt"])
def test_decoder_logits_match_reference(which, request):
    from tunesmith import MusicGen

    folder, ref = request.getfixturevalue(which)
    mg = MusicGen.from_pretrained(folder, device="cpu", dtype="float32")
    model = mg._model
    tokens = model.text.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    states, mask = model.text.encode(PROMPTS)
    K, T = model.config.decoder.n_codebooks, 12
    codes = torch.randint(0, 64, (2, K, T))
    codes[:, :, 0] = 64  # BOS, as in generation
    expected = _reference_logits(ref, tokens, codes)

    with torch.inference_mode():
        model.lm.setup_cache(batch=2, max_len=T)
        model.lm.set_condition(states, mask)
        full = model.lm(codes, torch.arange(T))
        torch.testing.assert_close(full, expected, atol=1e-4, rtol=0)
        # One position at a time through the static cache gives the same logits.
        model.lm.setup_cache(batch=2, max_len=T)
        steps = torch.cat([model.lm(codes[:, :, t:t + 1], torch.tensor([t])) for t in range(T)], dim=2)
    torch.testing.assert_close(steps, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("which", ["mono_ckpt", "stereo_ckpt"])
def test_greedy_generation_matches_reference(which, request):
    from tunesmith import MusicGen

    folder, ref = request.getfixturevalue(which)
    mg = MusicGen.from_pretrained(folder, device="cpu", dtype="float32")
    model = mg._model
    stereo = model.config.decoder.audio_channels == 2
    tokens = model.text.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    assert tokens["attention_mask"][0].sum() < tokens["attention_mask"][1].sum()  # prompts of different lengths

    n_frames = 40  # 0.8 s
    per_channel = model.config.decoder.codebooks_per_channel
    ref_codes, ref_audio = reference_generate(ref, tokens, n_frames + per_channel - 1)
    assert ref_codes.shape[-1] == n_frames  # transformers: max_new_tokens - (codebooks per channel - 1)

    states, mask = model.text.encode(PROMPTS)
    codes = generate_codes(model.lm, states, mask, n_frames, SamplingParams(temperature=0, cfg=3.0),
                           torch.zeros(2, dtype=torch.long))
    assert torch.equal(codes, ref_codes)
    assert len(torch.unique(codes)) > 8 and not torch.equal(codes[0], codes[1])  # not degenerate

    audio = decode_codes(model.codec, codes, model.config.decoder.audio_channels)
    torch.testing.assert_close(audio, ref_audio, atol=1e-4, rtol=0)

    # Through the public API: the same audio, exactly duration * 50 frames long.
    clips = mg.generate(PROMPTS, duration=0.8, temperature=0, cfg=3.0)
    assert [c.audio.shape for c in clips] == [(2 if stereo else 1, 0.8 * 32000)] * 2
    np.testing.assert_allclose(np.stack([c.audio for c in clips]), ref_audio.numpy(), atol=1e-4, rtol=0)
    assert audio.abs().max() > 1e-3  # random codebooks: codes decode to real, different audio


def test_without_guidance_matches_reference(mono_ckpt):
    from tunesmith import MusicGen

    folder, ref = mono_ckpt
    mg = MusicGen.from_pretrained(folder, device="cpu", dtype="float32")
    tokens = mg._model.text.tokenizer(PROMPTS[:1], return_tensors="pt")
    with torch.no_grad():
        ref_audio = ref.generate(**tokens, do_sample=False, guidance_scale=1.0, max_new_tokens=25 + 3)
    clip, = mg.generate(PROMPTS[:1], duration=0.5, temperature=0, cfg=1.0)
    np.testing.assert_allclose(clip.audio, ref_audio[0].numpy(), atol=1e-4, rtol=0)
