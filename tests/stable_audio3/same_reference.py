"""SAME-S written out from Stability's definitions (stable_audio_3/models/autoencoders.py,
TransformerResamplingBlock with chunk_midpoint_shift; models/transformer.py: TransformerBlock, Attention with
differential heads and DyT q/k norms, RotaryEmbedding over half of each head, GLU feed-forward, DynamicTanh),
reading Stability-named tensors directly: the reference tunesmith's SAME-S is checked against."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

AE = "pretransform.model."


@dataclass(frozen=True)
class Sizes:
    patch: int = 8
    stride: int = 4
    width: int = 16
    depth: int = 4
    latent: int = 8
    dim_heads: int = 8
    ff_mult: int = 2
    chunk_size: int = 8  # frames: two latents
    encoder_taps: int = 1
    decoder_taps: int = 3


def random_same_s(sizes: Sizes, seed: int = 0) -> dict:
    """Stability-named SAME-S tensors, random at scales that keep a tiny stack lively."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=None):
        scale = 1 / math.sqrt(shape[-1] if len(shape) > 1 else 1) if scale is None else scale
        return scale * torch.randn(*shape, generator=g)

    D, dh, inner = sizes.width, sizes.dim_heads, sizes.width * sizes.ff_mult
    frames = 2 * sizes.patch
    out = {}

    def dyt(prefix, dim):
        out[prefix + "alpha"] = 1.0 + rand(1, scale=0.2)
        out[prefix + "gamma"] = 1.0 + rand(dim, scale=0.2)
        out[prefix + "beta"] = rand(dim, scale=0.1)

    def block(prefix, c_in, c_out, taps):
        out[prefix + "mapping.weight_g"] = 1.0 + rand(c_out, 1, 1, scale=0.3)
        out[prefix + "mapping.weight_v"] = rand(c_out, c_in, taps, scale=1.0)
        out[prefix + "mapping.bias"] = rand(c_out, scale=0.1)
        out[prefix + "new_tokens"] = rand(1, 1, D, scale=1.0)
        for j in range(sizes.depth):
            layer = f"{prefix}transformers.{j}."
            dyt(layer + "pre_norm.", D)
            out[layer + "rope.inv_freq"] = 1.0 / (10000 ** (torch.arange(0, dh // 2, 2).float() / (dh // 2)))
            out[layer + "self_attn.to_qkv.weight"] = rand(5 * D, D)
            out[layer + "self_attn.to_out.weight"] = rand(D, D)
            dyt(layer + "self_attn.q_norm.", dh)
            dyt(layer + "self_attn.k_norm.", dh)
            dyt(layer + "ff_norm.", D)
            out[layer + "ff.ff.0.proj.weight"] = rand(2 * inner, D)
            out[layer + "ff.ff.0.proj.bias"] = rand(2 * inner, scale=0.1)
            out[layer + "ff.ff.2.weight"] = rand(D, inner)
            out[layer + "ff.ff.2.bias"] = rand(D, scale=0.1)

    block(AE + "encoder.layers.0.", frames, D, sizes.encoder_taps)
    out[AE + "encoder.layers.2.weight"] = rand(sizes.latent, D)
    out[AE + "encoder.layers.2.bias"] = rand(sizes.latent, scale=0.1)
    out[AE + "decoder.layers.1.weight"] = rand(D, sizes.latent)
    out[AE + "decoder.layers.1.bias"] = rand(D, scale=0.1)
    block(AE + "decoder.layers.3.", D, frames, sizes.decoder_taps)
    out[AE + "bottleneck.scaling_factor"] = 1.0 + rand(1, sizes.latent, 1, scale=0.2)
    out[AE + "bottleneck.bias"] = rand(1, sizes.latent, 1, scale=0.1)
    out[AE + "bottleneck.running_std"] = torch.tensor([1.3])
    return out


def same_s_config(sizes: Sizes) -> dict:
    """The pretransform section of a model_config.json for these sizes (SAME-S's switches on)."""
    layer = {"channels": sizes.width, "c_mults": [1], "strides": [sizes.stride], "latent_dim": sizes.latent,
             "transformer_depths": [sizes.depth], "differential": True, "dyt": True, "dim_heads": sizes.dim_heads,
             "ff_mult": sizes.ff_mult, "variable_stride": True, "chunk_size": sizes.chunk_size,
             "chunk_midpoint_shift": True}
    return {"encoder": {"type": "same", "config": {"in_channels": 2 * sizes.patch, **layer,
                                                   "conv_mapping": sizes.encoder_taps == 3}},
            "decoder": {"type": "same", "config": {"out_channels": 2 * sizes.patch, **layer, "sinusoidal_blocks": [0],
                                                   "conv_mapping": sizes.decoder_taps == 3, "mask_noise": 0.0}},
            "bottleneck": {"type": "softnorm", "config": {"dim": sizes.latent, "auto_scale": True}},
            "pretransform": {"type": "patched", "config": {"patch_size": sizes.patch, "channels": 2}},
            "latent_dim": sizes.latent, "downsampling_ratio": sizes.patch * sizes.stride, "io_channels": 2}


def _dyt(x, w, prefix):
    return w[prefix + "gamma"] * torch.tanh(w[prefix + "alpha"] * x) + w[prefix + "beta"]


def _rotary(t, dim_heads):
    """Stability's RotaryEmbedding(dim_heads // 2) over positions 0..n-1, applied to the first dims of t."""
    rot, n = dim_heads // 2, t.shape[-2]
    inv_freq = 1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))
    freqs = torch.einsum("i,j->ij", torch.arange(n).float(), inv_freq)
    freqs = torch.cat([freqs, freqs], dim=-1)
    t_rot, t_pass = t[..., :rot], t[..., rot:]
    x1, x2 = t_rot.chunk(2, dim=-1)
    return torch.cat([t_rot * freqs.cos() + torch.cat([-x2, x1], dim=-1) * freqs.sin(), t_pass], dim=-1)


def _attention(x, w, prefix, dim_heads):
    B, n, D = x.shape
    heads = D // dim_heads
    split = (x @ w[prefix + "to_qkv.weight"].T).chunk(5, dim=-1)  # q, k, v, q_diff, k_diff
    q, k, v, q2, k2 = (t.reshape(B, n, heads, dim_heads).transpose(1, 2) for t in split)
    q, q2 = _dyt(q, w, prefix + "q_norm."), _dyt(q2, w, prefix + "q_norm.")
    k, k2 = _dyt(k, w, prefix + "k_norm."), _dyt(k2, w, prefix + "k_norm.")
    q, k, q2, k2 = (_rotary(t, dim_heads) for t in (q, k, q2, k2))

    def attend(q, k):
        return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim_heads), dim=-1) @ v

    out = (attend(q, k) - attend(q2, k2)).transpose(1, 2).reshape(B, n, D)
    return out @ w[prefix + "to_out.weight"].T


def _layer(x, w, prefix, dim_heads):
    x = x + _attention(_dyt(x, w, prefix + "pre_norm."), w, prefix + "self_attn.", dim_heads)
    h = _dyt(x, w, prefix + "ff_norm.") @ w[prefix + "ff.ff.0.proj.weight"].T + w[prefix + "ff.ff.0.proj.bias"]
    a, gate = h.chunk(2, dim=-1)
    return x + (a * F.silu(gate)) @ w[prefix + "ff.ff.2.weight"].T + w[prefix + "ff.ff.2.bias"]


def _mapping(x, w, prefix):
    v, g = w[prefix + "mapping.weight_v"], w[prefix + "mapping.weight_g"]
    weight = g * v / v.norm(dim=(1, 2), keepdim=True)
    return F.conv1d(x, weight, w[prefix + "mapping.bias"], padding="same")


def _resampling(x, w, prefix, sizes: Sizes, encoder: bool, midpoint_shift: bool = True):
    """TransformerResamplingBlock.forward with sliding_window None and chunk_midpoint_shift, variable_stride."""
    B, S = x.shape[0], sizes.stride
    if encoder:
        x = F.pad(x, (0, -x.shape[-1] % sizes.chunk_size))
        x = _mapping(x, w, prefix)
    x = x.transpose(1, 2)  # '... a b -> ... b a'
    if not encoder:
        x = F.pad(x, (0, 0, 0, -x.shape[1] % (sizes.chunk_size // S)))
    seg_in, seg_out = (S, 1) if encoder else (1, S)
    D = x.shape[-1]
    x = x.reshape(-1, seg_in, D)  # 'b (n c) d -> (b n) c d'
    x = torch.cat([x, w[prefix + "new_tokens"].expand(x.shape[0], seg_out, -1)], dim=-2)
    x = x.reshape(B, -1, D)  # '(b n) c d -> b (n c) d'
    chunk = sizes.chunk_size + sizes.chunk_size // S
    layers = [f"{prefix}transformers.{j}." for j in range(sizes.depth)]
    split = sizes.depth // 2 if midpoint_shift else sizes.depth
    shift = chunk // 2
    x = x.reshape(-1, chunk, D)
    for layer in layers[:split]:
        x = _layer(x, w, layer, sizes.dim_heads)
    x = x.reshape(B, -1, D)
    if midpoint_shift:
        x = torch.cat([x[:, :shift, :], x, x[:, -shift:, :]], dim=1).reshape(-1, chunk, D)
        for layer in layers[split:]:
            x = _layer(x, w, layer, sizes.dim_heads)
        x = x.reshape(B, -1, D)[:, shift:-shift, :]
    x = x.reshape(-1, S + 1, D)[:, -seg_out:, :]  # 'b (n c) d -> (b n) c d', the new tokens
    x = x.reshape(B, -1, D).transpose(1, 2)  # '(b n) c d -> b d (n c)'
    return x if encoder else _mapping(x, w, prefix)


def encode(audio: torch.Tensor, w: dict, sizes: Sizes) -> torch.Tensor:
    """[B, 2, samples] -> latents [B, latent, N]."""
    x = F.pad(audio, (0, -audio.shape[-1] % sizes.patch))
    B, C, T = x.shape
    x = x.reshape(B, C, T // sizes.patch, sizes.patch).permute(0, 1, 3, 2).reshape(B, C * sizes.patch, -1)
    x = _resampling(x, w, AE + "encoder.layers.0.", sizes, encoder=True)
    x = (x.transpose(1, 2) @ w[AE + "encoder.layers.2.weight"].T + w[AE + "encoder.layers.2.bias"]).transpose(1, 2)
    x = x * w[AE + "bottleneck.scaling_factor"] + w[AE + "bottleneck.bias"]
    return x / w[AE + "bottleneck.running_std"]


def decode(latents: torch.Tensor, w: dict, sizes: Sizes, midpoint_shift: bool = True) -> torch.Tensor:
    """latents [B, latent, L] -> audio [B, 2, L' * hop] (L' rounded up to whole chunks)."""
    x = latents * w[AE + "bottleneck.running_std"]
    x = (x.transpose(1, 2) @ w[AE + "decoder.layers.1.weight"].T + w[AE + "decoder.layers.1.bias"]).transpose(1, 2)
    x = _resampling(x, w, AE + "decoder.layers.3.", sizes, encoder=False, midpoint_shift=midpoint_shift)
    B, CP, T = x.shape
    return x.reshape(B, 2, sizes.patch, T).permute(0, 1, 3, 2).reshape(B, 2, T * sizes.patch)
