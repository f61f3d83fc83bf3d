"""Tiny checkpoints in Stability's layout (model_config.json + model.safetensors, T5Gemma in its own folder),
written from a tiny diffusers pipeline the way Stability names its tensors (diffusers' converter read
backwards): the DiT under model.model.*, SAME under pretransform.model.*, the conditioners under
conditioner.conditioners.*, the differential projections in Stability's row order [q k v q2 k2]."""

from __future__ import annotations

import json
from pathlib import Path

import torch

DIT_RENAMES = [("transformer_blocks.", "transformer.layers."), ("proj_in.", "transformer.project_in."),
               ("proj_out.", "transformer.project_out."), ("memory_tokens", "transformer.memory_tokens"),
               ("global_cond_embedder.", "transformer.global_cond_embedder."),
               ("rotary_pos_emb.", "transformer.rotary_pos_emb.")]
LAYER_RENAMES = [(".ff.proj_in.", ".ff.ff.0.proj."), (".ff.proj_out.", ".ff.ff.2."), (".norm_attn.", ".pre_norm."),
                 (".attn.", ".self_attn."), (".norm_ff.", ".ff_norm.")]


def stability_rows(rows: torch.Tensor) -> torch.Tensor:
    """diffusers' differential rows [q q2 k k2 v] -> Stability's [q k v q2 k2]."""
    q, q2, k, k2, v = rows.chunk(5, dim=0)
    return torch.cat([q, k, v, q2, k2], dim=0)


def dit_tensors(dit, differential: bool) -> dict:
    out = {}
    for name, tensor in dit.state_dict().items():
        if name == "prompt_padding_embedding":
            out["conditioner.conditioners.prompt.padding_embedding"] = tensor
            continue
        if differential and name.endswith("self_attn.to_qkv.weight"):
            tensor = stability_rows(tensor)
        stability = name
        for ours, theirs in DIT_RENAMES:
            if name.startswith(ours):
                stability = theirs + name[len(ours):]
                break
        for ours, theirs in ((".ff.proj_in.", ".ff.ff.0.proj."), (".ff.proj_out.", ".ff.ff.2.")):
            stability = stability.replace(ours, theirs)
        out["model.model." + stability] = tensor
    return out


def same_l_tensors(vae) -> dict:
    """diffusers' AutoencoderSAME (one resampling level) -> Stability's names."""
    out = {}
    for name, tensor in vae.state_dict().items():
        if name.startswith("bottleneck."):
            stability = name.replace("bottleneck.scale", "bottleneck.scaling_factor")
        elif name.startswith("encoder.proj."):
            stability = "encoder.layers.2." + name[len("encoder.proj."):]
        elif name.startswith("decoder.proj."):
            stability = "decoder.layers.1." + name[len("decoder.proj."):]
        else:
            side, _, index, rest = name.split(".", 3)
            stability = f"{side}.layers.{int(index) + (0 if side == 'encoder' else 3)}.{rest}"
            for ours, theirs in LAYER_RENAMES:
                stability = stability.replace(ours, theirs)
            if name.endswith("attn.to_qkv.weight"):
                tensor = stability_rows(tensor)
        out["pretransform.model." + stability] = tensor
        if name.endswith("norm_attn.alpha"):  # Stability saves each layer's rotary frequencies (diffusers does not)
            out["pretransform.model." + stability.replace("pre_norm.alpha", "rope.inv_freq")] = rotary(vae.config.dim_heads)
    return out


def rotary(dim_heads: int) -> torch.Tensor:
    """A SAME layer's RotaryEmbedding(dim_heads // 2).inv_freq."""
    dim = dim_heads // 2
    return 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))


def model_config(pipe, same: dict, post_trained: bool) -> dict:
    """A model_config.json for the pipeline's sizes (Stability's schema, as its factory reads it)."""
    vae, seconds = pipe.vae.config, pipe.duration_embedder.config
    return {
        "model_type": "diffusion_cond", "sample_rate": vae.sampling_rate, "sample_size": 2 * vae.sampling_rate,
        "model": {
            "io_channels": vae.latent_dim,
            "diffusion": {"diffusion_objective": "rf_denoiser" if post_trained else "rectified_flow",
                          "cross_attention_cond_ids": ["prompt", "seconds_total"],
                          "global_cond_ids": ["seconds_total"], "local_add_cond_ids": ["inpaint"], "config": {}},
            "conditioning": {"cond_dim": seconds.output_dim, "configs": [
                {"id": "prompt", "type": "t5gemma",
                 "config": {"model_name": "google/t5gemma-b-b-ul2", "max_length": 256, "padding_mode": "learned"}},
                {"id": "seconds_total", "type": "number",
                 "config": {"min_val": seconds.min_val, "max_val": seconds.max_val}}]},
            "pretransform": {"type": "autoencoder", "config": same},
        },
    }


def same_l_config(vae) -> dict:
    c = vae.config
    layer = {"channels": c.encoder_channels, "c_mults": list(c.encoder_c_mults), "strides": list(c.encoder_strides),
             "latent_dim": c.latent_dim, "transformer_depths": list(c.encoder_transformer_depths),
             "differential": c.use_differential_attention, "dyt": True, "dim_heads": c.dim_heads,
             "ff_mult": c.ff_mult, "variable_stride": True, "sliding_window": [c.sliding_window, c.sliding_window]}
    return {"encoder": {"type": "same", "config": {"in_channels": 2 * c.patch_size, **layer}},
            "decoder": {"type": "same", "config": {"out_channels": 2 * c.patch_size, **layer,
                                                   "sinusoidal_blocks": list(c.decoder_sinusoidal_blocks)}},
            "bottleneck": {"type": "softnorm", "config": {"dim": c.latent_dim, "auto_scale": True}},
            "pretransform": {"type": "patched", "config": {"patch_size": c.patch_size, "channels": 2}},
            "latent_dim": c.latent_dim, "downsampling_ratio": vae.downsampling_ratio, "io_channels": 2}


def save_stability_checkpoint(folder: Path, pipe, post_trained: bool = True, same: tuple[dict, dict] | None = None):
    """Writes the pipeline's DiT, duration embedder and T5Gemma in Stability's layout; its autoencoder too,
    or `same` = (config, Stability-named tensors) in its place (a SAME-S)."""
    from safetensors.torch import save_file

    differential = pipe.transformer.config.use_differential_attention
    same_config, same_tensors = same or (same_l_config(pipe.vae), same_l_tensors(pipe.vae))
    tensors = {**dit_tensors(pipe.transformer, differential), **same_tensors}
    tensors["conditioner.conditioners.seconds_total.embedder.embedding.1.weight"] = pipe.duration_embedder.linear.weight
    tensors["conditioner.conditioners.seconds_total.embedder.embedding.1.bias"] = pipe.duration_embedder.linear.bias
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    (folder / "model_config.json").write_text(json.dumps(model_config(pipe, same_config, post_trained), indent=1))
    pipe.text_encoder.save_pretrained(folder / "t5gemma-b-b-ul2")
    pipe.tokenizer.save_pretrained(folder / "t5gemma-b-b-ul2")
