"""stable-audio-tools' forward passes written out from its definitions, reading its own key names.

Independent of tunesmith's key map and of diffusers: DiffusionTransformer._forward with global_cond_type
"prepend" (dit.py, transformer.py), the Oobleck decoder (autoencoders.py) and NumberConditioner
(conditioners.py, adp.py NumberEmbedder). stable-audio-tools itself needs einops, flash-attn and
its pinned versions, so it is not imported here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DIT, VAE = "model.model.", "pretransform.model."


def _mlp(x, sd, prefix, bias=False):  # Linear, SiLU, Linear
    b = (lambda i: sd[f"{prefix}.{i}.bias"]) if bias else (lambda i: None)
    return F.linear(F.silu(F.linear(x, sd[f"{prefix}.0.weight"], b(0))), sd[f"{prefix}.2.weight"], b(2))


def _norm(sd, p, x):  # stable-audio-tools' LayerNorm: gamma, beta (a zero buffer unless bias=True), eps 1e-5
    return F.layer_norm(x, x.shape[-1:], sd[p + ".gamma"], sd[p + ".beta"], eps=1e-5)


def _rotate_half(x):  # '... (j d) -> ... j d', j=2; cat(-x2, x1)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rotary(x, freqs):  # partial rotary: the first freqs.shape[-1] dims of each head
    rot = freqs.shape[-1]
    xr, xp = x[..., :rot], x[..., rot:]
    return torch.cat((xr * freqs.cos() + _rotate_half(xr) * freqs.sin(), xp), dim=-1)


def _attention(sd, p, x, context, heads, head_dim, freqs):
    B, N, _ = x.shape
    split = (lambda t: t.reshape(B, t.shape[1], -1, head_dim).transpose(1, 2))  # b n (h d) -> b h n d
    if context is None:
        q, k, v = map(split, F.linear(x, sd[p + "to_qkv.weight"]).chunk(3, dim=-1))
    else:
        q = split(F.linear(x, sd[p + "to_q.weight"]))
        k, v = map(split, F.linear(context, sd[p + "to_kv.weight"]).chunk(2, dim=-1))
    q = F.layer_norm(q, (head_dim,), sd[p + "q_norm.weight"], sd[p + "q_norm.bias"], eps=1e-6)
    k = F.layer_norm(k, (head_dim,), sd[p + "k_norm.weight"], sd[p + "k_norm.bias"], eps=1e-6)
    if freqs is not None:  # self-attention only: cross-attention gets no rotary_pos_emb
        q, k = _rotary(q, freqs), _rotary(k, freqs)
    if k.shape[1] != heads:  # grouped queries: repeat_interleave the key/value heads
        k, v = (t.repeat_interleave(heads // k.shape[1], dim=1) for t in (k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(B, N, heads * head_dim)
    return F.linear(out, sd[p + "to_out.weight"])


def dit_forward(sd, config, x, t, cross, global_cond):
    """x [B, io, T], t [B], cross [B, L, cond_token_dim] (before to_cond_embed), global_cond [B, global_cond_dim]."""
    sd = {k[len(DIT):]: v for k, v in sd.items() if k.startswith(DIT)}
    cfg = config["model"]["diffusion"]["config"]
    heads, depth = cfg["num_heads"], cfg["depth"]
    head_dim = cfg["embed_dim"] // heads
    f = 2 * math.pi * t[:, None] @ sd["timestep_features.weight"].T  # FourierFeatures: [B, 128]
    timestep = _mlp(torch.cat([f.cos(), f.sin()], dim=-1), sd, "to_timestep_embed", bias=True)
    context = _mlp(cross, sd, "to_cond_embed")
    prepend = (_mlp(global_cond, sd, "to_global_embed") + timestep)[:, None]  # [B, 1, E]
    x = F.conv1d(x, sd["preprocess_conv.weight"]) + x
    x = F.linear(x.transpose(1, 2), sd["transformer.project_in.weight"])
    x = torch.cat([prepend, x], dim=1)  # [B, 1 + T, E]
    positions = torch.arange(x.shape[1]).float()
    freqs = torch.einsum("i,j->ij", positions, sd["transformer.rotary_pos_emb.inv_freq"])
    freqs = torch.cat([freqs, freqs], dim=-1)
    for i in range(depth):
        p = f"transformer.layers.{i}."
        x = x + _attention(sd, p + "self_attn.", _norm(sd, p + "pre_norm", x), None, heads, head_dim, freqs)
        x = x + _attention(sd, p + "cross_attn.", _norm(sd, p + "cross_attend_norm", x), context, heads, head_dim, None)
        h = _norm(sd, p + "ff_norm", x)
        h, gate = F.linear(h, sd[p + "ff.ff.0.proj.weight"], sd[p + "ff.ff.0.proj.bias"]).chunk(2, -1)
        x = x + F.linear(h * F.silu(gate), sd[p + "ff.ff.2.weight"], sd[p + "ff.ff.2.bias"])
    out = F.linear(x, sd["transformer.project_out.weight"]).transpose(1, 2)[:, :, 1:]
    return F.conv1d(out, sd["postprocess_conv.weight"]) + out


def vae_decode(sd, config, z):
    """OobleckDecoder (Snake, weight-normed convs) on latents z [B, latent_dim, T] -> audio [B, channels, T * hop]."""
    dec = config["model"]["pretransform"]["config"]["decoder"]["config"]
    p0 = VAE + "decoder.layers."

    def weight(p):  # torch weight_norm, dim 0: g * v / ||v|| over the other dims
        v = sd[p + ".weight_v"]
        return sd[p + ".weight_g"] * v / v.norm(dim=(1, 2), keepdim=True)

    def snake(x, p):
        alpha, beta = sd[p + ".alpha"].exp()[None, :, None], sd[p + ".beta"].exp()[None, :, None]
        return x + 1.0 / (beta + 1e-9) * torch.sin(alpha * x) ** 2

    def conv(x, p, **kw):
        return F.conv1d(x, weight(p), sd.get(p + ".bias"), **kw)

    def res_unit(x, p, dilation):
        y = conv(snake(x, p + ".layers.0"), p + ".layers.1", dilation=dilation, padding=3 * dilation)
        return x + conv(snake(y, p + ".layers.2"), p + ".layers.3")

    strides, n = dec["strides"], len(dec["strides"])
    x = conv(z, p0 + "0", padding=3)
    for j, i in enumerate(range(n, 0, -1)):
        p, stride = f"{p0}{j + 1}.layers", strides[i - 1]
        x = F.conv_transpose1d(snake(x, p + ".0"), weight(p + ".1"), sd[p + ".1.bias"], stride=stride,
                               padding=math.ceil(stride / 2))
        for u, dilation in enumerate((1, 3, 9)):
            x = res_unit(x, f"{p}.{u + 2}", dilation)
    return conv(snake(x, f"{p0}{n + 1}"), f"{p0}{n + 2}", padding=3)  # final_tanh: false


def number_embedding(sd, config, cid, seconds):
    """NumberConditioner: clamp, normalise to [0, 1], LearnedPositionalEmbedding, Linear -> [B, 1, cond_dim]."""
    c = next(c for c in config["model"]["conditioning"]["configs"] if c["id"] == cid)["config"]
    lo, hi = c["min_val"], c["max_val"]
    x = (seconds.clamp(lo, hi) - lo) / (hi - lo)
    p = f"conditioner.conditioners.{cid}.embedder.embedding."
    f = x[:, None] * sd[p + "0.weights"][None] * 2 * math.pi
    features = torch.cat([x[:, None], f.sin(), f.cos()], dim=-1)
    return F.linear(features, sd[p + "1.weight"], sd[p + "1.bias"])[:, None]
