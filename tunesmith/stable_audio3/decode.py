"""Latents -> audio with SAME, window by window, each window's seams exact.

Decoding a whole clip at once holds every token of it (17 per latent) in each layer, and diffusers' SAME-L
builds a dense band mask over all of them (120 s: 22 k tokens, a 2 GB mask). Here each window of latents is
decoded with `margin` latents on each side, as many as any of its samples depends on, and the margins are
cut away: the joined audio is the whole clip's decode (up to float rounding), in memory bounded by the window.

    SAME-S: a latent's tokens meet their chunk partner (layers 0-2) and their shifted-chunk partner, whose
            tokens met theirs (layers 3-5): 2 latents each way, 3 with the 3-tap output convolution; windows
            start on chunk boundaries so that the chunks are the whole clip's.
    SAME-L: each layer's band reaches one latent further: `depth` latents each way.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from .same_s import AutoencoderSAMES

WINDOW_LATENTS = 128  # about 12 s at 44.1 kHz, as Stability's reference decodes in chunks of 128


def margin_and_alignment(vae: nn.Module) -> tuple[int, int]:
    """(latents of margin each side, the multiple windows start at)."""
    if isinstance(vae, AutoencoderSAMES):
        chunk = vae.config.latents_per_chunk
        return 2 * chunk, chunk  # covers the 3 latents that SAME-S's chunk pair reaches, on a chunk boundary
    config = vae.config  # diffusers' AutoencoderSAME
    return max(config.encoder_transformer_depths) * config.sliding_window + 1, 1


def windows(latents: int, window: int, alignment: int) -> list[tuple[int, int]]:
    """[start, end) latents of each window (window a multiple of the alignment)."""
    window = max(alignment, window - window % alignment)
    return [(a, min(a + window, latents)) for a in range(0, latents, window)]


def decode(vae: nn.Module, latents: torch.Tensor, samples: int, window: int = WINDOW_LATENTS,
           report: Callable[[], None] | None = None, layers: list[nn.ModuleList] | None = None) -> torch.Tensor:
    """latents [B, C, L] -> audio [B, channels, samples] float32, clamped to [-1, 1] as the pipelines do;
    report() after each window. layers: each decoder block's transformer layers to decode with in place of
    its own (StableAudio3._decoder_layers: half precision on a GPU)."""
    with decoding_with(vae, layers):
        return _decode(vae, latents, samples, window, report)


@contextlib.contextmanager
def decoding_with(vae: nn.Module, layers: list[nn.ModuleList] | None):
    """Inside, the decoder blocks run `layers` (None: their own); their own are put back after."""
    from .cpu import decoder_blocks

    if layers is None:
        yield
        return
    blocks = decoder_blocks(vae)
    own = [block.transformers for block in blocks]
    try:
        for block, swapped in zip(blocks, layers, strict=True):
            block.transformers = swapped
        yield
    finally:
        for block, kept in zip(blocks, own):
            block.transformers = kept


def _decode(vae: nn.Module, latents: torch.Tensor, samples: int, window: int,
            report: Callable[[], None] | None) -> torch.Tensor:
    margin, alignment = margin_and_alignment(vae)
    hop = vae.downsampling_ratio
    dtype = next(vae.parameters()).dtype
    z = latents.to(dtype)
    L = z.shape[2]
    audio = None
    for a, b in windows(L, window, alignment):
        lo, hi = max(a - margin, 0), min(b + margin, L)
        part = vae.decode(z[:, :, lo:hi]).sample.float()  # [B, channels, >= (hi - lo) * hop]
        if audio is None:
            audio = torch.empty(z.shape[0], part.shape[1], L * hop, device=part.device)
        audio[:, :, a * hop:b * hop] = part[:, :, (a - lo) * hop:(b - lo) * hop]
        if report:
            report()
    return audio[:, :, :samples].clamp(-1.0, 1.0)


def window_count(latents: int, vae: nn.Module, window: int = WINDOW_LATENTS) -> int:
    return len(windows(latents, window, margin_and_alignment(vae)[1]))
