"""MusicGen LoRA: the decoder with merged adapters against transformers' MusicGen with peft's LoRA layers."""

import copy

import numpy as np
import pytest
import torch

from tunesmith.errors import TunesmithError

from ..checkpoints import reference_generate
from ..lora_adapters import peft_layers, write_peft_folder, write_single_file

# every linear the decoder has: self- and cross-attention, the MLP, two of the four heads and the text projection
TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "lm_heads.0", "lm_heads.3", "enc_to_dec_proj"]
RANK, ALPHA = 4, 8
PROMPTS = ["calm lofi piano", "deep house with a hypnotic bassline and bossa nova guitar, 80 bpm"]


@pytest.fixture(scope="module")
def adapter(mono_ckpt, tmp_path_factory):
    """(PEFT folder, transformers reference with peft's LoRA layers at scale `SCALE`)."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    ref = mono_ckpt[1]
    layers = peft_layers(ref, TARGETS, RANK, ALPHA, seed=3, size=0.1)
    assert any(".encoder_attn." in k for k in layers) and not any("text_encoder" in k for k in layers)
    folder = write_peft_folder(tmp_path_factory.mktemp("musicgen-lora"), layers, RANK, ALPHA, TARGETS)
    with_lora = inject_adapter_in_model(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS),
                                        copy.deepcopy(ref))
    set_peft_model_state_dict(with_lora, layers)
    return folder, with_lora.eval()


def set_scale(model, scale):
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.set_scale("default", scale)


@pytest.mark.parametrize("scale", [1.0, -0.6])
def test_logits_are_transformers_with_peft(mono_ckpt, adapter, scale):
    from tunesmith import MusicGen

    folder, ref = adapter
    set_scale(ref, scale)
    model = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32", lora=(folder, scale))._model
    tokens = model.text.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    states, mask = model.text.encode(PROMPTS)
    codes = torch.randint(0, 64, (2, model.config.decoder.n_codebooks, 10), generator=torch.Generator().manual_seed(1))
    codes[:, :, 0] = 64  # BOS
    with torch.no_grad():
        expected = ref(**tokens, decoder_input_ids=codes.reshape(-1, 10)).logits.view(2, -1, 10, 64)
        plain = mono_ckpt[1](**tokens, decoder_input_ids=codes.reshape(-1, 10)).logits.view(2, -1, 10, 64)
    with torch.inference_mode():
        model.lm.setup_cache(batch=2, max_len=10)
        model.lm.set_condition(states, mask)
        logits = model.lm(codes, torch.arange(10))
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)
    assert (expected - plain).abs().max() > 0.1  # the adapter changes the model


def test_greedy_generation_is_transformers_with_peft(mono_ckpt, adapter):
    """The whole generation: the packed CPU linears hold the merged weights."""
    from tunesmith import MusicGen

    folder, ref = adapter
    set_scale(ref, 0.8)
    mg = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32", lora=f"{folder}@0.8")
    tokens = mg._model.text.tokenizer(PROMPTS[:1], return_tensors="pt")
    _, expected = reference_generate(ref, tokens, 25 + 3)  # 0.5 s: 25 frames, and 3 more for the delays
    clip, = mg.generate(PROMPTS[0], duration=0.5, seed=0, temperature=0, cfg=3.0)
    plain, = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32").generate(
        PROMPTS[0], duration=0.5, seed=0, temperature=0, cfg=3.0)
    np.testing.assert_allclose(clip.audio, expected[0].numpy(), atol=1e-4, rtol=0)
    assert np.abs(clip.audio - plain.audio).max() > 1e-3
    assert clip.params["lora"] == [[str(folder), 0.8]]


def test_adapter_of_another_family_or_size_is_refused_before_loading(mono_ckpt, tmp_path, monkeypatch):
    from tunesmith import MusicGen

    monkeypatch.setattr("tunesmith.musicgen.loader.load_decoder",
                        lambda *a, **k: pytest.fail("the decoder's weights were read"))
    ace = {"layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 32),
           "layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(32, 4)}
    path = write_single_file(tmp_path / "ace.safetensors", ace, 8.0)
    with pytest.raises(TunesmithError, match=r"its layer base_model\.model\.layers\.0\.self_attn\.q_proj is none of"):
        MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32", lora=path)
    wide = {"decoder.model.decoder.layers.1.fc1.lora_A.weight": torch.zeros(4, 48),
            "decoder.model.decoder.layers.1.fc1.lora_B.weight": torch.zeros(64, 4)}
    path = write_single_file(tmp_path / "wide.safetensors", wide, 8.0)
    with pytest.raises(TunesmithError, match=r"layer base_model\.model\.decoder\.model\.decoder\.layers\.1\.fc1 maps "
                                             r"48 -> 64 features, the model's 32 -> 64"):
        MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32", lora=path)
