"""A stable-audio-tools checkpoint folder (model_config.json + model.safetensors) -> StableAudioParts.

stable-audio-open-small is published only in this layout. Its DiT is diffusers' StableAudioDiTModel
with a LayerNorm on queries and keys (qk_norm "ln") in both attentions, its VAE diffusers'
AutoencoderOobleck; its T5 text encoder is not in the checkpoint and is loaded from its own folder.

Running the parts as stable-audio-tools does (generate_diffusion_cond, DiTWrapper):
  cross  = cat([text_projection(T5(ids, mask)) * mask[..., None], seconds[id](s) for the other cross_ids], 1)
           # [B, text_max_length + 1, cond_dim]; padded tokens are zero vectors and NOT masked in attention
  global = cat([seconds[id](s) for id in global_ids], -1)                         # [B, 1, global_cond_dim]
  v = transformer(x [B, C, T], t [B] in (0, 1], encoder_hidden_states=cross, global_hidden_states=global,
                  rotary_embedding=get_1d_rotary_pos_embed(max(head_dim // 2, 32), T + 1, use_real=True,
                  repeat_interleave_real=False), return_dict=False)[0]   # T + 1: the global token comes first
  guidance: the unconditional branch has cross = zeros (prompt and seconds tokens alike), the same global.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from .parts import StableAudioConfig, StableAudioParts
from .tools_config import TIME_FEATURES, ToolsConfig, parse_tools_config, read_tools_config, text_encoder_name
from .tools_weights import load_tools_weights, tools_key_map

__all__ = ["QK_NORM_EPS", "load_tools_folder", "read_tools_config", "text_encoder_name"]

WEIGHTS_FILE = "model.safetensors"
QK_NORM_EPS = 1e-6  # stable-audio-tools' Attention: nn.LayerNorm(dim_heads, elementwise_affine=True, eps=1e-6)
PINGPONG_STEPS = 8  # stable-audio-tools' defaults for rf_denoiser models: 8 ping-pong steps, no guidance
PINGPONG_CFG = 1.0


def load_tools_folder(folder: Path, text_encoder_folder: Path, device: torch.device | str,
                      dtype: torch.dtype) -> StableAudioParts:
    cfg = parse_tools_config(read_tools_config(folder))
    path = folder / WEIGHTS_FILE
    if not path.exists() and not path.is_symlink():
        also = " (model.ckpt is a pickle, which tunesmith does not load)" if (folder / "model.ckpt").exists() else ""
        raise CheckpointError(f"no {WEIGHTS_FILE} in {folder}{also}")
    tokenizer, text_encoder = _load_text_encoder(text_encoder_folder, dtype)
    text_dim = text_encoder.config.d_model
    projected = cfg.t5_project_out or text_dim != cfg.cond_dim
    with torch.device("meta"):
        parts = nn.ModuleDict({
            "transformer": build_dit(cfg),
            "vae": build_vae(cfg),
            "seconds": build_numbers(cfg),
            "text_projection": nn.Linear(text_dim, cfg.cond_dim) if projected else nn.Identity(),
        })
    load_tools_weights(parts, path, cfg, tools_key_map(cfg, projected), dtype)
    for name, tensor in list(parts.named_parameters()) + list(parts.named_buffers()):
        if tensor.is_meta:
            raise AssertionError(f"{name} was not filled from the checkpoint")
    parts.to(device).eval().requires_grad_(False)
    text_encoder.to(device).eval().requires_grad_(False)
    return StableAudioParts(
        config=stable_audio_config(cfg), tokenizer=tokenizer, text_max_length=cfg.t5_max_length,
        text_encoder=text_encoder, text_projection=parts["text_projection"], seconds=parts["seconds"],
        transformer=parts["transformer"], vae=parts["vae"])


def stable_audio_config(cfg: ToolsConfig) -> StableAudioConfig:
    return StableAudioConfig(
        sample_rate=cfg.sample_rate, sample_size=cfg.sample_size // cfg.vae.hop, hop=cfg.vae.hop,
        audio_channels=cfg.vae.audio_channels, sampler="pingpong", steps=PINGPONG_STEPS, cfg=PINGPONG_CFG,
        cross_ids=list(cfg.cross_ids), global_ids=list(cfg.global_ids), rotary_dim=max(cfg.dit.head_dim // 2, 32))


def build_dit(cfg: ToolsConfig) -> nn.Module:
    """diffusers' StableAudioDiTModel with stable-audio-tools' q/k LayerNorms set when the config has them
    (diffusers' StableAudioAttnProcessor2_0 applies attn.norm_q / norm_k to each head before rotary)."""
    from diffusers import StableAudioDiTModel

    d = cfg.dit
    dit = StableAudioDiTModel(
        sample_size=cfg.sample_size // cfg.vae.hop, in_channels=d.io_channels, num_layers=d.depth,
        attention_head_dim=d.head_dim, num_attention_heads=d.num_heads, num_key_value_attention_heads=d.kv_heads,
        out_channels=d.io_channels, cross_attention_dim=d.cross_dim, time_proj_dim=TIME_FEATURES,
        global_states_input_dim=d.global_cond_dim, cross_attention_input_dim=d.cond_token_dim)
    if d.qk_norm:
        for block in dit.transformer_blocks:
            for attn in (block.attn1, block.attn2):
                attn.norm_q = nn.LayerNorm(d.head_dim, eps=QK_NORM_EPS)
                attn.norm_k = nn.LayerNorm(d.head_dim, eps=QK_NORM_EPS)
    return dit


def build_vae(cfg: ToolsConfig) -> nn.Module:
    from diffusers import AutoencoderOobleck

    v = cfg.vae
    with warnings.catch_warnings():  # diffusers builds its convs with the deprecated torch weight_norm
        warnings.simplefilter("ignore", FutureWarning)
        return AutoencoderOobleck(
            encoder_hidden_size=v.encoder_channels, downsampling_ratios=list(v.strides),
            channel_multiples=list(v.c_mults), decoder_channels=v.decoder_channels, decoder_input_channels=v.latent_dim,
            audio_channels=v.audio_channels, sampling_rate=cfg.sample_rate)


def build_numbers(cfg: ToolsConfig) -> nn.ModuleDict:
    from diffusers.pipelines.stable_audio.modeling_stable_audio import (
        StableAudioNumberConditioner,
    )

    return nn.ModuleDict({cid: StableAudioNumberConditioner(cfg.cond_dim, lo, hi) for cid, (lo, hi) in cfg.numbers.items()})


def _load_text_encoder(folder: Path, dtype: torch.dtype):
    from transformers import AutoTokenizer, T5EncoderModel

    from ..diffusion.folder import load_part

    tokenizer = load_part(AutoTokenizer.from_pretrained, folder, "T5 tokenizer")
    encoder = load_part(lambda path: T5EncoderModel.from_pretrained(path, dtype=dtype), folder, "T5 text encoder")
    return tokenizer, encoder
