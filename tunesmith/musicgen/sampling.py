"""Next-token choice on the device: guidance mix, temperature, top-k, top-p, and seeded noise.

The noise is a counter-based hash of (seed, step, codebook, token), so each batch row has its
own seed, a clip is reproduced by its seed alone whatever else shares the batch, and the step
needs no generator state (it can be captured in a CUDA graph).
"""

from __future__ import annotations

import torch

from .options import SamplingParams  # noqa: F401 (read from here by the engine and the tests)


def guidance_mix(logits: torch.Tensor, cfg: float, cfg_beta: float | None = None) -> torch.Tensor:
    """logits [2B, ...] (conditional rows, then unconditional) -> [B, ...]: uncond + cfg * (cond - uncond).

    With cfg_beta, logits [3B, ...] (text+style, style only, neither) -> [B, ...]:
    uncond + cfg * (style + cfg_beta * (cond - style) - uncond), MusicGen-Style's double guidance.
    """
    if cfg_beta is None:
        cond, uncond = logits.chunk(2, dim=0)
        return uncond + cfg * (cond - uncond)
    cond, style, uncond = logits.chunk(3, dim=0)
    return uncond + cfg * (style + cfg_beta * (cond - style) - uncond)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of the last dim, -inf elsewhere."""
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability sums to >= p (always the top one)."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = (cum - sorted_logits.softmax(dim=-1)) >= p  # mass before this token already reaches p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


_M1, _M2 = 0x7FEB352D, 0x2C1B3C6D  # odd multipliers < 2**31: products of 32-bit values fit in int64


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mix (lowbias32 shape) on int64 tensors holding values < 2**32."""
    mask = 0xFFFFFFFF
    x = x ^ (x >> 16)
    x = (x * _M1) & mask
    x = x ^ (x >> 15)
    x = (x * _M2) & mask
    return x ^ (x >> 16)


def uniform_noise(seeds: torch.Tensor, step: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """seeds [B] int64, step [] int64 -> uniform floats in (0, 1) of shape [B, *shape]."""
    idx = torch.arange(shape[0] * shape[1], device=seeds.device).view(*shape)
    key = _hash32((_hash32(seeds & 0xFFFFFFFF) ^ _hash32(step + 0x9E3779B9)) & 0xFFFFFFFF)  # [B]
    bits = _hash32(key[:, None, None] ^ idx)  # [B, *shape]
    return ((bits >> 8).float() + 0.5) / 16777216.0


def sample(logits: torch.Tensor, params: SamplingParams, seeds: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """logits [B, K, V] -> codes [B, K]. Shapes are fixed; branches depend on params only."""
    logits = logits.float()
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:  # a k past the vocabulary keeps everything
        logits = top_k_filter(logits, params.top_k)
    if params.top_p:
        logits = top_p_filter(logits, params.top_p)
    # Gumbel-max: argmax(log p + gumbel) draws from softmax(logits) without a host sync.
    gumbel = -torch.log(-torch.log(uniform_noise(seeds, step, logits.shape[1:])))
    return (logits + gumbel).argmax(dim=-1)
