"""ACE-Step LoRA: tunesmith's merged adapters against diffusers' AceStepPipeline with the same adapters
loaded through peft (load_lora_weights + set_adapters), float32 on the CPU, same seed."""

import logging

import numpy as np
import pytest
import torch

import tunesmith
from tunesmith.errors import TunesmithError

from ..lora_adapters import peft_layers, write_peft_folder, write_single_file
from .tiny import tiny_pipeline

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TRAINER_NAMES = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out.0": "o_proj"}  # ACE-Step's own
RANK = 4
PROMPT = "dusty boom bap, vinyl crackle"


def trainer_layers(transformer, alpha, seed):
    """peft's LoRA on the DiT's attention, renamed to ACE-Step's module names as its trainer writes them."""
    layers = {}
    for key, value in peft_layers(transformer, TARGETS, RANK, alpha, seed).items():
        for theirs, ours in TRAINER_NAMES.items():
            key = key.replace(f".{theirs}.lora_", f".{ours}.lora_")
        layers[key] = value
    return layers


@pytest.fixture(scope="module")
def adapters(ace_ckpt, tmp_path_factory):
    """Two trainer-style PEFT folders: alpha = 2 x rank (ACE-Step's default) and alpha = rank."""
    root = tmp_path_factory.mktemp("ace-lora")
    dit = ace_ckpt[1].transformer
    return {alpha: write_peft_folder(root / f"alpha{alpha}", trainer_layers(dit, alpha, seed=alpha), RANK, alpha,
                                     list(TRAINER_NAMES.values()))
            for alpha in (2 * RANK, RANK)}


def diffusers_audio(folder, loras, seed=5, steps=2, seconds=10.0):
    """AceStepPipeline with each (adapter folder, weight) loaded by peft and set by set_adapters."""
    from diffusers import AceStepPipeline

    pipe = AceStepPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    for i, (path, _) in enumerate(loras):
        pipe.load_lora_weights(str(path), adapter_name=f"a{i}")
    pipe.set_adapters([f"a{i}" for i in range(len(loras))], [w for _, w in loras])
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipe(PROMPT, audio_duration=seconds, num_inference_steps=steps, generator=generator).audios[0].numpy()


def generate(model, seed=5):
    clip, = model.generate(PROMPT, duration=10, seed=seed, steps=2)
    return clip


@pytest.mark.parametrize("alpha", [2 * RANK, RANK])
def test_merged_adapter_is_diffusers_with_peft(ace_ckpt, ace_model, adapters, alpha):
    """diffusers reads no adapter_config.json (alpha taken as the rank): its weight is scale x alpha / rank
    for the same update; tunesmith reads alpha from the config."""
    model = tunesmith.load(ace_ckpt[0], device="cpu", dtype="float32", lora=(adapters[alpha], 0.7))
    clip = generate(model)
    expected = diffusers_audio(ace_ckpt[0], [(adapters[alpha], 0.7 * alpha / RANK)])
    np.testing.assert_allclose(clip.audio, expected[:, :clip.audio.shape[1]], atol=1e-5, rtol=0)
    assert np.abs(clip.audio - generate(ace_model).audio).max() > 1e-2  # the adapter changes the song
    assert clip.params["lora"] == [[str(adapters[alpha]), 0.7]]


def test_adapters_stack_in_order(ace_ckpt, adapters):
    loras = [(adapters[2 * RANK], 0.5), (adapters[RANK], -1.2)]
    model = tunesmith.load(ace_ckpt[0], device="cpu", dtype="float32", lora=[f"{loras[0][0]}@0.5", loras[1]])
    expected = diffusers_audio(ace_ckpt[0], [(adapters[2 * RANK], 0.5 * 2), (adapters[RANK], -1.2)])
    np.testing.assert_allclose(generate(model).audio, expected[:, :480000], atol=1e-5, rtol=0)


def test_single_file_with_alpha_is_the_folder(ace_ckpt, adapters, tmp_path, caplog):
    """ComfyUI's single file (diffusion_model.decoder. keys, .alpha tensors) is the same adapter; without
    alpha it is taken as the rank, with a warning."""
    from safetensors.torch import load_file

    layers = {k.removeprefix("base_model.model."): v
              for k, v in load_file(str(adapters[2 * RANK] / "adapter_model.safetensors")).items()}
    single = write_single_file(tmp_path / "style.safetensors", layers, 2 * RANK, "diffusion_model.decoder.",
                               torch.float32)
    folder_clip = generate(tunesmith.load(ace_ckpt[0], device="cpu", dtype="float32", lora=(adapters[2 * RANK], 0.8)))
    file_clip = generate(tunesmith.load(ace_ckpt[0], device="cpu", dtype="float32", lora=f"{single}@0.8"))
    np.testing.assert_allclose(file_clip.audio, folder_clip.audio, atol=1e-6, rtol=0)

    bare = write_single_file(tmp_path / "bare.safetensors", layers, None, dtype=torch.float32)
    with caplog.at_level(logging.WARNING, logger="tunesmith"):
        bare_clip = generate(tunesmith.load(ace_ckpt[0], device="cpu", dtype="float32", lora=(bare, 1.6)))
    assert "half strength" in caplog.text  # alpha = rank: 1.6 here is 0.8 of an alpha = 2 x rank adapter
    np.testing.assert_allclose(bare_clip.audio, folder_clip.audio, atol=1e-5, rtol=0)


def test_cpu_path_merges_before_rounding(ace_ckpt, adapters):
    """bfloat16 on the CPU (DiTCPU): the adapter is in its packed weights, so the song is the float32 one with
    the adapter, to bfloat16's rounding, and not the one without."""
    lora = (adapters[2 * RANK], 1.0)
    exact = generate(tunesmith.load(ace_ckpt[0], device="cpu", dtype="float32", lora=lora)).audio
    fast = generate(tunesmith.load(ace_ckpt[0], device="cpu", dtype="bfloat16", lora=lora)).audio
    plain = generate(tunesmith.load(ace_ckpt[0], device="cpu", dtype="bfloat16")).audio
    assert np.abs(fast - exact).max() < 0.25 * np.abs(plain - exact).max()


@pytest.fixture
def no_weights_read(monkeypatch):
    """Loading the model's weights fails loudly: a refusal must come before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model's weights were read")

    monkeypatch.setattr("tunesmith.acestep.layout.load_folder", refuse)


def test_adapter_for_another_size_is_one_line_before_loading(ace_ckpt, tmp_path, no_weights_read):
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel

    wider = AceStepTransformer1DModel(hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, head_dim=8, in_channels=24, audio_acoustic_hidden_dim=8,
                                      patch_size=2, sliding_window=16)
    folder = write_peft_folder(tmp_path / "wide", trainer_layers(wider, 8, 0), RANK, 8, ["q_proj"])
    first = r"layer base_model\.model\.layers\.0\.cross_attn\.k_proj"  # the file's first layer
    with pytest.raises(TunesmithError, match=first + r" maps 48 -> 16 features, the model's 32 -> 16 \(an adapter "
                                                     r"for another size or family\)"):
        tunesmith.load(ace_ckpt[0], device="cpu", dtype="float32", lora=folder)


def test_adapter_for_another_family_is_refused(ace_ckpt, tmp_path, no_weights_read):
    layers = {"decoder.model.decoder.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 32),
              "decoder.model.decoder.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(32, 4)}
    path = write_single_file(tmp_path / "musicgen.safetensors", layers, 4.0, prefix="")
    with pytest.raises(TunesmithError, match="its layer decoder.model.decoder.layers.0.self_attn.q_proj is none of"):
        tunesmith.load(ace_ckpt[0], device="cpu", dtype="float32", lora=path)
