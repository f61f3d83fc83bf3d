"""MusicGen-Style's style conditioner: a few seconds of reference audio -> a handful of style tokens.

    excerpt (mono, 32 kHz) -> 24 kHz -> MERT's last hidden state [T, 768], 75 frames a second
      -> linear [T, 512] -> pre-norm transformer, sinusoidal positions, no causal mask
      -> BatchNorm (running statistics) -> residual VQ over the first eval_q codebooks
      -> every 15th frame (5 a second) -> output projection [ceil(T / 15), decoder dim]

The quantizer is the bottleneck that keeps the model from copying the reference: fewer codebooks
pass less of it. A null style (guidance's unconditional rows) is zeros, as the reference's masked
output. MERT is transformers' HubertModel with MERT's config (m-a-p/MERT-v1-95M's own code is not run).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from .lm import sinusoidal_positions

MERT_RATE = 24000


@dataclass
class StyleConfig:
    """audiocraft's conditioners.self_wav.style block, with its transformer scale spelled out."""

    dim: int = 512
    n_layers: int = 8
    n_heads: int = 8
    ffn_dim: int = 2048
    mert_dim: int = 768
    out_dim: int = 1536  # the decoder's width
    n_q: int = 6  # codebooks in the checkpoint
    bins: int = 1024
    eval_q: int = 3  # codebooks used by default
    ds_factor: int = 15  # MERT frames per style token
    excerpt: float = 3.0  # seconds, by default
    sample_rate: int = 32000  # of the excerpt, before MERT's resampling
    eps: float = 1e-5  # BatchNorm's


class EncoderLayer(nn.Module):
    """audiocraft's StreamingTransformerLayer with norm_first, no biases but the norms', GELU."""

    def __init__(self, cfg: StyleConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.linear1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.linear2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)  # 3x (B, H, T, hd)
        y = F.scaled_dot_product_attention(q, k, v)  # every frame sees every other
        x = x + self.out(y.transpose(1, 2).reshape(B, T, D))
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


def residual_quantize(x: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """x [B, T, D], codebooks [Q, bins, D] -> the sum of each stage's nearest code to what the
    stages before left over [B, T, D]."""
    out, residual = torch.zeros_like(x), x
    for book in codebooks:  # [bins, D]
        dist = residual.pow(2).sum(-1, keepdim=True) - 2 * residual @ book.T + book.pow(2).sum(-1)  # [B, T, bins]
        chosen = book[dist.argmin(dim=-1)]  # [B, T, D]
        residual = residual - chosen
        out = out + chosen
    return out


class StyleConditioner(nn.Module):
    """MERT states -> style tokens in the decoder's width (everything after MERT)."""

    def __init__(self, cfg: StyleConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Linear(cfg.mert_dim, cfg.dim)
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_layers))
        self.register_buffer("bn_mean", torch.zeros(cfg.dim))
        self.register_buffer("bn_var", torch.ones(cfg.dim))
        self.register_buffer("codebooks", torch.zeros(cfg.n_q, cfg.bins, cfg.dim))
        self.output_proj = nn.Linear(cfg.dim, cfg.out_dim)

    def forward(self, states: torch.Tensor, eval_q: int) -> torch.Tensor:
        """states [B, T, mert_dim] -> tokens [B, ceil(T / ds_factor), out_dim]."""
        x = self.embed(states)  # [B, T, dim]
        x = x + sinusoidal_positions(x.shape[1], self.cfg.dim).to(x)  # audiocraft's sin embedding, from 0
        for layer in self.layers:
            x = layer(x)
        x = (x - self.bn_mean) / torch.sqrt(self.bn_var + self.cfg.eps)
        x = residual_quantize(x, self.codebooks[:eval_q])
        return self.output_proj(x[:, :: self.cfg.ds_factor])


@dataclass
class StyleModel:
    config: StyleConfig
    conditioner: StyleConditioner
    mert: nn.Module  # transformers HubertModel, float32

    def to(self, device: torch.device) -> "StyleModel":
        self.conditioner.to(device)
        self.mert.to(device)
        return self

    @torch.inference_mode()
    def tokens(self, excerpts: np.ndarray, eval_q: int) -> torch.Tensor:
        """excerpts [B, samples] mono at config.sample_rate -> style tokens [B, T, out_dim] float32."""
        from ..audio.io import resample

        audio = resample(np.ascontiguousarray(excerpts, dtype=np.float32), self.config.sample_rate, MERT_RATE)
        device = self.conditioner.embed.weight.device
        states = self.mert(torch.from_numpy(audio).to(device)).last_hidden_state  # [B, T, 768] at 75 Hz
        return self.conditioner(states.float(), eval_q)


def excerpt_start(n_samples: int, excerpt: int, seed: int) -> int:
    """Where a seeded excerpt of `excerpt` samples starts in a reference of n_samples: the reference
    draws it at random; here the clip's seed draws it, so that the seed reproduces the clip."""
    return int(np.random.default_rng(seed).integers(0, n_samples - excerpt + 1))


def style_key_map(cfg: StyleConfig, prefix: str) -> dict[str, tuple[list[str], str]]:
    """Our StyleConditioner's names -> (audiocraft keys under prefix, how to join them)."""
    m = {
        "embed.weight": ([prefix + "embed.weight"], "one"),
        "embed.bias": ([prefix + "embed.bias"], "one"),
        "bn_mean": ([prefix + "batch_norm.running_mean"], "one"),
        "bn_var": ([prefix + "batch_norm.running_var"], "one"),
        "codebooks": ([f"{prefix}rvq.vq.layers.{q}._codebook.embed" for q in range(cfg.n_q)], "stack"),
        "output_proj.weight": ([prefix + "output_proj.weight"], "one"),
        "output_proj.bias": ([prefix + "output_proj.bias"], "one"),
    }
    for i in range(cfg.n_layers):
        src, dst = f"{prefix}transformer.layers.{i}.", f"layers.{i}."
        m[dst + "qkv.weight"] = ([src + "self_attn.in_proj_weight"], "one")
        m[dst + "out.weight"] = ([src + "self_attn.out_proj.weight"], "one")
        for name in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "linear1.weight", "linear2.weight"):
            m[dst + name] = ([src + name], "one")
    return m


def training_only_keys(cfg: StyleConfig, prefix: str) -> list[str]:
    """Tensors the reference keeps for training (EMA statistics of the codebooks, BatchNorm's step count)."""
    keys = [prefix + "batch_norm.num_batches_tracked"]
    for q in range(cfg.n_q):
        keys += [f"{prefix}rvq.vq.layers.{q}._codebook.{name}" for name in ("inited", "cluster_size", "embed_avg")]
    return keys


def check_codebooks_ready(get, cfg: StyleConfig, prefix: str):
    """A codebook never initialised would be set by k-means on the first input in the reference."""
    for q in range(cfg.n_q):
        key = f"{prefix}rvq.vq.layers.{q}._codebook.inited"
        if not bool(get(key).reshape(-1)[0]):
            raise CheckpointError(f"style quantizer codebook {q} was never trained ({key} is 0)")


def mert_config(raw: dict):
    """MERT's config.json -> transformers HubertConfig; MERT's own extras must be off (MERT-v1-95M's are)."""
    from transformers import HubertConfig

    for key, off in (("feature_extractor_cqt", False), ("deepnorm", False)):
        if raw.get(key, off) != off:
            raise CheckpointError(f"MERT config has {key}={raw[key]}: HubertModel cannot run it")
    if raw.get("attention_relax", -1.0) > 0:
        raise CheckpointError(f"MERT config has attention_relax={raw['attention_relax']}: HubertModel cannot run it")
    fields = {k: v for k, v in raw.items() if k not in ("model_type", "architectures", "auto_map")}
    return HubertConfig(**fields)
