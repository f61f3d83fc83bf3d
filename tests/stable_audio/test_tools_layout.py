"""The stable-audio-tools layout (stable-audio-open-small): config, key map, and the loaded parts against
stable-audio-tools' own forward passes (tools_reference) on the same original-layout state dict."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tunesmith.errors import CheckpointError
from tunesmith.stable_audio.tools_layout import load_tools_folder, read_tools_config, text_encoder_name

from . import tools_reference as ref
from .tiny import MAX_TOKENS, T5_DIM, save_tiny_tools_checkpoint, tiny_tools_config

DIT = "model.model.transformer."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sao_small")
    state = save_tiny_tools_checkpoint(folder)
    return folder, state


@pytest.fixture(scope="module")
def parts(tiny):
    return load_tools_folder(tiny[0], tiny[0] / "t5", "cpu", torch.float32)


def _variant(tiny, tmp_path, state=None, config=None):
    """A copy of the tiny checkpoint with another state dict or config; its T5 stays where it was."""
    from safetensors.torch import save_file

    folder, original = tiny
    save_file(original if state is None else state, str(tmp_path / "model.safetensors"))
    (tmp_path / "model_config.json").write_text(json.dumps(config or tiny_tools_config()))
    return lambda: load_tools_folder(tmp_path, folder / "t5", "cpu", torch.float32)


def _one_line_error(load) -> str:
    with pytest.raises(CheckpointError) as err:
        load()
    message = str(err.value)
    assert "\n" not in message
    return message


def test_config_and_parts(parts, tiny):
    cfg = parts.config
    assert (cfg.sample_rate, cfg.sample_size, cfg.hop, cfg.audio_channels) == (4000, 256, 8, 2)
    assert (cfg.sampler, cfg.steps, cfg.cfg) == ("pingpong", 8, 1.0)
    assert cfg.cross_ids == ["prompt", "seconds_total"] and cfg.global_ids == ["seconds_total"]
    assert cfg.max_seconds == pytest.approx(0.512)
    assert parts.text_max_length == MAX_TOKENS and isinstance(parts.text_projection, torch.nn.Identity)
    assert text_encoder_name(read_tools_config(tiny[0])) == "t5"
    assert parts.text_encoder.config.d_model == T5_DIM
    assert parts.tokenizer("rain").input_ids[-1] == parts.tokenizer.eos_token_id
    assert not any(p.requires_grad for p in parts.transformer.parameters())


def test_tensors_land_where_expected(parts, tiny):
    state = tiny[1]
    block = parts.transformer.transformer_blocks[1]
    qkv = state[DIT + "layers.1.self_attn.to_qkv.weight"].chunk(3)
    kv = state[DIT + "layers.1.cross_attn.to_kv.weight"].chunk(2)
    pairs = [
        (block.attn1.to_q.weight, qkv[0]), (block.attn1.to_k.weight, qkv[1]), (block.attn1.to_v.weight, qkv[2]),
        (block.attn2.to_k.weight, kv[0]), (block.attn2.to_v.weight, kv[1]),
        (block.attn2.norm_k.bias, state[DIT + "layers.1.cross_attn.k_norm.bias"]),
        (block.attn1.norm_q.weight, state[DIT + "layers.1.self_attn.q_norm.weight"]),
        (block.norm2.bias, state[DIT + "layers.1.cross_attend_norm.beta"]),
        (block.ff.net[2].weight, state[DIT + "layers.1.ff.ff.2.weight"]),
        (parts.transformer.time_proj.weight, state["model.model.timestep_features.weight"][:, 0]),
        (parts.transformer.cross_attention_proj[2].weight, state["model.model.to_cond_embed.2.weight"]),
        (parts.vae.decoder.block[0].conv_t1.weight_g, state["pretransform.model.decoder.layers.1.layers.1.weight_g"]),
        (parts.vae.decoder.block[1].res_unit3.snake2.alpha[0, :, 0],
         state["pretransform.model.decoder.layers.2.layers.4.layers.2.alpha"]),
        (parts.vae.encoder.conv2.weight_v, state["pretransform.model.encoder.layers.4.weight_v"]),
        (parts.seconds["seconds_total"].time_positional_embedding[0].weights,
         state["conditioner.conditioners.seconds_total.embedder.embedding.0.weights"]),
    ]
    for ours, theirs in pairs:
        assert torch.equal(ours, theirs)


def test_dit_matches_stable_audio_tools(parts, tiny):
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    state, config = tiny[1], tiny_tools_config()
    gen = torch.Generator().manual_seed(1)
    frames = 250
    x = torch.randn(2, 4, frames, generator=gen)
    t = torch.tensor([0.3, 0.9])
    cross = torch.randn(2, MAX_TOKENS + 1, T5_DIM, generator=gen)  # prompt tokens, then seconds_total
    cross[1, 5:MAX_TOKENS] = 0  # padded tokens: zeroed by the T5 conditioner, not masked in attention
    global_cond = torch.randn(2, T5_DIM, generator=gen)
    head_dim = parts.transformer.config.attention_head_dim
    rotary = get_1d_rotary_pos_embed(max(head_dim // 2, 32), frames + 1, use_real=True, repeat_interleave_real=False)
    with torch.no_grad():
        ours = parts.transformer(x, t, encoder_hidden_states=cross, global_hidden_states=global_cond[:, None],
                                 rotary_embedding=rotary, return_dict=False)[0]
        theirs = ref.dit_forward(state, config, x, t, cross, global_cond)
    assert ours.shape == (2, 4, frames) and theirs.std() > 0.1
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_vae_decode_matches_stable_audio_tools(parts, tiny):
    z = torch.randn(1, 4, 250, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = parts.vae.decode(z).sample
        theirs = ref.vae_decode(tiny[1], tiny_tools_config(), z)
    assert ours.shape == (1, 2, 2000) and theirs.std() > 0.01  # audio-sized, well above the tolerance
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_seconds_embedding_matches_stable_audio_tools(parts, tiny):
    seconds = torch.tensor([0.5, 11.0, 400.0])  # the last one is clamped to max_val
    with torch.no_grad():
        ours = parts.seconds["seconds_total"](seconds)
    theirs = ref.number_embedding(tiny[1], tiny_tools_config(), "seconds_total", seconds)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_missing_tensor(tiny, tmp_path):
    key = DIT + "layers.0.cross_attn.to_kv.weight"
    state = {k: v for k, v in tiny[1].items() if k != key}
    message = _one_line_error(_variant(tiny, tmp_path, state))
    assert key in message and "model.safetensors" in message


def test_unexpected_tensor(tiny, tmp_path):
    key = DIT + "layers.0.self_attn.lambda_dc"
    message = _one_line_error(_variant(tiny, tmp_path, {**tiny[1], key: torch.zeros(3)}))
    assert "unexpected" in message and key in message and "model.safetensors" in message


def test_misshapen_tensor(tiny, tmp_path):
    key = "pretransform.model.decoder.layers.0.weight_v"
    state = dict(tiny[1])
    state[key] = torch.zeros(state[key].shape[0], state[key].shape[1] + 1, 7)
    message = _one_line_error(_variant(tiny, tmp_path, state))
    assert key in message and "shape" in message


def test_other_rotary_frequencies_refused(tiny, tmp_path):
    key = DIT + "rotary_pos_emb.inv_freq"
    message = _one_line_error(_variant(tiny, tmp_path, {**tiny[1], key: tiny[1][key] * 2}))
    assert key in message


def test_weight_norm_parametrization_names(tiny, tmp_path):
    """Checkpoints saved with torch's newer weight norm name g and v parametrizations.weight.original0/1."""
    rename = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
    state = {}
    for k, v in tiny[1].items():
        leaf = k.rsplit(".", 1)[-1]
        state[k[: -len(leaf)] + rename[leaf] if leaf in rename else k] = v
    parts = _variant(tiny, tmp_path, state)()
    assert torch.equal(parts.vae.decoder.conv1.weight_v, tiny[1]["pretransform.model.decoder.layers.0.weight_v"])


@pytest.mark.parametrize("edit, words", [
    (lambda c: c.update(model_type="autoencoder"), "model_type"),
    (lambda c: c["model"]["diffusion"].update(diffusion_objective="v"), "rf_denoiser"),
    (lambda c: c["model"]["diffusion"]["config"]["attn_kwargs"].update(differential=True), "differential"),
    (lambda c: c["model"]["diffusion"]["config"].update(conformer=True), "conformer"),
    (lambda c: c["model"]["diffusion"]["config"].update(sliding_window=[63, 64]), "sliding_window"),
    (lambda c: c["model"]["diffusion"]["config"].update(lora_rank=4), "lora_rank"),
    (lambda c: c["model"]["pretransform"]["config"]["decoder"]["config"].pop("final_tanh"), "final_tanh"),
    (lambda c: c["model"]["conditioning"]["configs"][1].update(type="int"), "int"),
    (lambda c: c["model"]["diffusion"].update(global_cond_ids=["prompt"]), "prompt"),
    (lambda c: c["model"].pop("pretransform"), "model.pretransform"),
])
def test_unsupported_configs_refused(tiny, tmp_path, edit, words):
    config = tiny_tools_config()
    edit(config)
    message = _one_line_error(_variant(tiny, tmp_path, config=config))
    assert words in message and "model_config.json" in message


def test_defaults_spelled_out_are_accepted(tiny, tmp_path):
    config = tiny_tools_config()
    config["model"]["diffusion"]["config"] |= {"zero_init_branch_outputs": False, "rotary_pos_emb": True,
                                               "project_cond_tokens": True, "sliding_window": None}
    config["model"]["diffusion"]["distribution_shift_options"] = {"min_length": 256, "max_length": 4096}
    assert _variant(tiny, tmp_path, config=config)().config.steps == 8


def test_missing_files(tiny, tmp_path):
    assert "model_config.json" in _one_line_error(lambda: load_tools_folder(tmp_path, tmp_path, "cpu", torch.float32))
    shutil.copy(tiny[0] / "model_config.json", tmp_path / "model_config.json")
    (tmp_path / "model.ckpt").write_bytes(b"pickle")
    message = _one_line_error(lambda: load_tools_folder(tmp_path, tiny[0] / "t5", "cpu", torch.float32))
    assert "model.safetensors" in message and "model.ckpt" in message
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    assert "damaged" in _one_line_error(lambda: load_tools_folder(tmp_path, tiny[0] / "t5", "cpu", torch.float32))
    assert "T5" in _one_line_error(lambda: load_tools_folder(tiny[0], tmp_path / "nowhere", "cpu", torch.float32))
