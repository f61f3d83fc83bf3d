"""The MusicGen decoder LM: summed codebook embeddings, sinusoidal positions, pre-LayerNorm
blocks (causal self-attention, cross-attention to the text states, GELU MLP), one head per codebook.

Self-attention keys/values live in a static cache written by position; cross-attention keys/values
are computed once per generation by `set_condition`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import cpu_kernels, cpu_step
from .config import DecoderConfig
from .linear import DynamicInt8Linear, Int4Linear, Int8Linear


def sinusoidal_positions(n_positions: int, dim: int) -> torch.Tensor:
    """[n_positions, dim]: cos in the first half, sin in the second (tensor2tensor order)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    angles = torch.arange(n_positions, dtype=torch.float32)[:, None] * freqs[None, :]
    table = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if dim % 2:
        table = F.pad(table, (0, 1))
    return table


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """q (B, H, T, hd), k/v (B, H, S, hd) -> (B, H, T, hd) in q's dtype.

    On the CPU a bfloat16 cache (MusicGenLM.cache_dtype) is read by cpu_kernels for one query position
    (the decode step); otherwise it is widened to float32: torch's CPU attention is several times slower
    in bfloat16 than in float32, so there the work is done in float32.
    """
    dtype = q.dtype
    if q.device.type == "cpu" and k.dtype == torch.bfloat16:
        kernels = cpu_kernels.library()
        y = None if kernels is None else cpu_kernels.attend_one(kernels, q.to(k.dtype), k, v, mask)
        if y is not None:
            return y.to(dtype)
        k, v = k.float(), v.float()
        mask = mask if mask is None or mask.dtype == torch.bool else mask.float()
    return F.scaled_dot_product_attention(q.to(k.dtype), k, v, attn_mask=mask).to(dtype)


def in_place(old: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
    """`new`'s values in `old`'s memory where they fit (captured CUDA graphs read that memory), else `new`."""
    if old is not None and old.shape == new.shape and old.dtype == new.dtype and old.device == new.device:
        return old.copy_(new)
    return new.contiguous()


class KVCache(nn.Module):
    def __init__(self, batch: int, heads: int, max_len: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor, length: int | None):
        """pos [T]; k, v (B, heads, T, head_dim) -> the first `length` cached positions (all if None)."""
        self.k.index_copy_(2, pos, k)
        self.v.index_copy_(2, pos, v)
        return self.k[:, :, :length], self.v[:, :, :length]


class SelfAttention(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.cache: KVCache | None = None

    def forward(self, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor | None, kv_len: int | None) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3x (B, H, T, hd)
        k, v = self.cache.update(pos, k.to(self.cache.k.dtype), v.to(self.cache.v.dtype), kv_len)  # (B, H, L, hd)
        y = attend(q, k, v, mask)  # mask [T, L] bool or None
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class CrossAttention(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.q = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.kv = nn.Linear(cfg.dim, 2 * cfg.dim, bias=False)
        self.out = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.k: torch.Tensor | None = None  # (B, H, S, hd), set once per generation
        self.v: torch.Tensor | None = None

    def set_condition(self, states: torch.Tensor, dtype: torch.dtype):
        """states [B, S, dim] (already projected and zeroed at padding)."""
        B, S, _ = states.shape
        kv = self.kv(states).view(B, S, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4).to(dtype)
        self.k, self.v = in_place(self.k, kv[0]), in_place(self.v, kv[1])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q = self.q(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        y = attend(q, self.k, self.v, mask)  # mask [B, 1, 1, S] additive
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.attn_norm = nn.LayerNorm(cfg.dim)
        self.attn = SelfAttention(cfg)
        self.cross_norm = None if cfg.prefix else nn.LayerNorm(cfg.dim)
        self.cross = None if cfg.prefix else CrossAttention(cfg)
        self.mlp_norm = nn.LayerNorm(cfg.dim)
        self.fc1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x, pos, self_mask, cross_mask, kv_len):
        x = x + self.attn(self.attn_norm(x), pos, self_mask, kv_len)
        if self.cross is not None:
            x = x + self.cross(self.cross_norm(x), cross_mask)
        return x + self.fc2(F.gelu(self.fc1(self.mlp_norm(x))))


class MusicGenLM(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Parameter(torch.empty(cfg.n_codebooks, cfg.vocab_size + 1, cfg.dim))  # +1: pad/BOS row
        self.text_proj = nn.Linear(cfg.text_dim, cfg.dim) if cfg.text_proj else nn.Identity()
        if cfg.melody:
            self.chroma_proj = nn.Linear(cfg.chroma_dim, cfg.dim) if cfg.chroma_proj else nn.Identity()
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.dim)
        self.heads = nn.Linear(cfg.dim, cfg.n_codebooks * cfg.vocab_size, bias=False)  # all codebooks' heads
        self.register_buffer("positions", sinusoidal_positions(cfg.max_positions, cfg.dim), persistent=False)
        self.causal: torch.Tensor | None = None  # [L, L] bool, set by setup_cache
        self.cross_mask: torch.Tensor | None = None  # [B, 1, 1, S] additive, set by set_condition
        self.prefix: torch.Tensor | None = None  # [B, S, dim] melody and style models' condition (set_condition)
        self.step_graphs: dict = {}  # captured CUDA graphs of the decode step (generate.StepGraph)
        self.whole_step: tuple | None = None  # (key, cpu_step.CPUStep or None) for the current cache and condition

    def release(self):
        """Drop caches, condition and captured graphs (before a move to another device, or to free memory)."""
        self.step_graphs.clear()
        self.causal = self.cross_mask = self.prefix = self.whole_step = None
        for layer in self.layers:
            layer.attn.cache = None
            if layer.cross is not None:
                layer.cross.k = layer.cross.v = None

    @property
    def quantized(self) -> bool:
        """Whether the step linears hold int8 or int4 weights (linear.specialise_linears)."""
        return isinstance(self.layers[0].fc1, (Int8Linear, DynamicInt8Linear, Int4Linear))

    @property
    def cache_dtype(self) -> torch.dtype:
        """Attention keys/values: the model dtype, except on a CPU, where cpu_kernels read a bfloat16
        cache (see `attend`): bfloat16 for a bfloat16 model, and on AVX2 for a quantized one too (its
        products already round the activations; the cache is half the bytes a step reads at a few
        hundred positions); float32 otherwise (an unquantized float32 model: the reference's numbers)."""
        dtype = self.embed.dtype
        if self.embed.device.type != "cpu":
            return dtype
        kernels = cpu_kernels.library()
        if kernels is None or not kernels.attend:
            return torch.float32
        if dtype == torch.bfloat16 or (self.quantized and kernels.int8_rounds_x):
            return torch.bfloat16
        return torch.float32

    def setup_cache(self, batch: int, max_len: int):
        """Allocate the static self-attention cache for `batch` rows and `max_len` audio positions
        (plus a melody model's prefix: call set_condition first).

        A cache of the same shape is kept, not reallocated: captured CUDA graphs point at it. Stale
        entries are harmless, since a position is always written before the causal mask lets it be read.
        """
        dtype, device = self.cache_dtype, self.embed.device
        max_len += self.offset
        old = self.layers[0].attn.cache
        if old is not None and old.k.shape == (batch, self.cfg.n_heads, max_len, self.cfg.head_dim) \
                and old.k.dtype == dtype and old.k.device == device:
            return
        self.step_graphs.clear()  # they point at the cache being replaced
        self.whole_step = None
        for layer in self.layers:
            layer.attn.cache = KVCache(batch, self.cfg.n_heads, max_len, self.cfg.head_dim, dtype, device)
        self.causal = torch.tril(torch.ones(max_len, max_len, dtype=torch.bool, device=device))

    @property
    def offset(self) -> int:
        """Positions taken by a melody or style model's condition prefix, before the first audio token."""
        return 0 if self.prefix is None else self.prefix.shape[1]

    def set_condition(self, text_states: torch.Tensor, text_mask: torch.Tensor, chroma: torch.Tensor | None = None,
                      style: torch.Tensor | None = None):
        """text_states [B, S, text_dim], text_mask [B, S] (1 = token) -> cross-attention keys/values, or
        for melody models the prefix [chroma frames; text states], chroma [B, F, chroma_dim] repeated or
        cut to chroma_length frames, or for style models the prefix [style tokens; text states], style
        [B, T, dim] (style.StyleConditioner's output; zeros for a null style).

        Padding (and the all-zero mask of the unconditional rows) zeroes the projected states, as
        the reference does, so masked rows attend to zeros and add nothing.
        """
        dtype = self.embed.dtype
        self.whole_step = None  # it points at the condition's tensors
        states = self.text_proj(text_states.to(dtype)) * text_mask[..., None].to(dtype)  # [B, S, dim]
        if self.cfg.prefix:
            if self.cfg.melody:
                repeats = -(-self.cfg.chroma_length // chroma.shape[1])
                audio = self.chroma_proj(chroma.to(dtype)).repeat(1, repeats, 1)[:, : self.cfg.chroma_length]
            else:
                audio = style.to(dtype)
            prefix = torch.cat([audio, states], dim=1)  # [B, chroma_length or T + S, dim]
            kept = in_place(self.prefix, prefix)
            replaced, self.prefix = kept is not self.prefix, kept
        else:
            for layer in self.layers:
                layer.cross.set_condition(states, self.cache_dtype)
            bias = torch.zeros(text_mask.shape, dtype=self.cache_dtype, device=states.device)
            cross_mask = bias.masked_fill(text_mask == 0, torch.finfo(bias.dtype).min)[:, None, None, :]  # [B,1,1,S]
            kept = in_place(self.cross_mask, cross_mask)  # its shape (B, S) is the cross K/V's too
            replaced, self.cross_mask = kept is not self.cross_mask, kept
        if replaced:  # graphs captured on the old condition buffers would read freed memory
            self.step_graphs.clear()

    def forward(self, codes: torch.Tensor, pos: torch.Tensor, kv_len: int | None = None,
                with_prefix: bool = False) -> torch.Tensor:
        """codes [B, K, T] at audio positions pos [T] -> logits [B, K, T, vocab].

        kv_len: attend to the first kv_len cached audio positions only (the CPU loop passes pos + 1);
        None keeps the whole static cache, for fixed shapes (CUDA graphs).
        with_prefix: melody models feed their condition prefix ahead of the codes (the prefill).
        """
        B, K, T = codes.shape
        books = torch.arange(K, device=codes.device)[None, :, None]
        x = self.embed[books, codes].sum(dim=1)  # [B, T, dim]
        offset = self.offset
        pos = pos + offset
        if with_prefix and offset:
            x = torch.cat([self.prefix, x], dim=1)
            pos = torch.cat([torch.arange(offset, device=pos.device), pos])
        x = x + self.positions[pos].to(self.embed.dtype)
        kv_len = None if kv_len is None else kv_len + offset
        if x.shape[1] == 1 and kv_len is not None:
            logits = self._whole_step(x, pos, kv_len)
            if logits is not None:
                return logits.view(B, T, K, -1).transpose(1, 2)
        # One new token against exactly the filled positions needs no mask.
        self_mask = None if kv_len is not None and x.shape[1] == 1 else self.causal[pos, :kv_len]  # [T, L]
        for layer in self.layers:
            x = layer(x, pos, self_mask, self.cross_mask, kv_len)
        logits = self.heads(self.norm(x[:, -T:]))  # [B, T, K * vocab]
        return logits.view(B, T, K, -1).transpose(1, 2)

    def _whole_step(self, x: torch.Tensor, pos: torch.Tensor, kv_len: int) -> torch.Tensor | None:
        """x [B, 1, dim] at cache position pos [1] reading kv_len positions -> logits [B, K * vocab]
        from cpu_step's one-call step, or None where it does not apply (the layers run instead)."""
        if x.device.type != "cpu" or int(pos[0]) != kv_len - 1:
            return None
        B = x.shape[0]
        # Cleared whenever the cache or condition is replaced; the key guards against any other way.
        key = (B, self.layers[0].attn.cache.k.data_ptr(), 0 if self.cross_mask is None else self.cross_mask.data_ptr())
        if self.whole_step is None or self.whole_step[0] != key:
            self.whole_step = (key, cpu_step.build(self, B))
        step = self.whole_step[1]
        return None if step is None else step(x[:, 0].to(torch.float32, copy=True), kv_len - 1)  # [B, dim]
