"""Repaint: a song -> latents through the Oobleck VAE's encoder, and the span of them to make anew.

As AceStepPipeline's task_type="repaint": the source is encoded (a draw from the VAE's posterior), the
frames inside the span are replaced by the learned silence and marked 1 in the mask (generate), those
outside keep the source and are marked 0. The pipeline encodes the whole song at once (about 15 GB per
tensor in the encoder's first layers for 10 minutes); here each window of latent frames is encoded with
`reach` frames of margin on each side and the margins are cut away, as decode.py does for the decoder.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .decode import WINDOW_FRAMES, windows


def reach(vae: nn.Module) -> int:
    """Latent frames each side that a latent frame's encoding depends on (the encoder's receptive field,
    rounded up), walked back from the output through diffusers' OobleckEncoder layers."""
    encoder = vae.encoder
    r = encoder.conv2.padding[0]
    for block in reversed(encoder.block):
        conv = block.conv1  # strided: output i reads inputs i s - p ... i s - p + k - 1
        r = r * conv.stride[0] + max(conv.padding[0], conv.kernel_size[0] - 1 - conv.padding[0])
        r += sum(unit.conv1.padding[0] for unit in (block.res_unit1, block.res_unit2, block.res_unit3))
    r += encoder.conv1.padding[0]  # in samples now
    return -(-r // vae.hop_length) + 1


def encode(vae: nn.Module, audio: torch.Tensor, window: int = WINDOW_FRAMES,
           report: Callable[[], None] | None = None) -> torch.Tensor:
    """audio [1, channels, L * hop] -> the posterior's parameters [1, 2 C, L] (mean, then scale), as
    vae.encoder computes them on the whole song (up to float rounding). report() after each window.
    Windows start at whole latent frames, so that every strided layer sees the same phase as on the whole."""
    hop = vae.hop_length
    frames = audio.shape[-1] // hop
    margin = reach(vae)
    x = audio.to(vae.device, vae.dtype)
    parts = []
    for a, b in windows(frames, window):
        lo, hi = max(a - margin, 0), min(b + margin, frames)
        part = vae.encoder(x[:, :, lo * hop:hi * hop])  # [1, 2 C, hi - lo]
        parts.append(part[:, :, a - lo:b - lo])
        if report:
            report()
    return torch.cat(parts, dim=-1)


def source_latents(posterior: torch.Tensor, seeds: list[int], dtype: torch.dtype) -> torch.Tensor:
    """One draw of the posterior per row, each from a CPU generator seeded with the row's seed:
    [B, L, C]. The pipeline draws it from torch's global generator (latent_dist.sample()), so it gives
    the same source after torch.manual_seed(seed)."""
    from diffusers.models.autoencoders.autoencoder_oobleck import OobleckDiagonalGaussianDistribution

    dist = OobleckDiagonalGaussianDistribution(posterior)
    rows = [dist.sample(generator=torch.Generator("cpu").manual_seed(s)) for s in seeds]  # [1, C, L] each
    return torch.cat(rows).transpose(1, 2).to(dtype)


def span_frames(frames: int, start: float, end: float | None, frames_per_second: float) -> tuple[int, int]:
    """[a, b) latent frames of the span (start, end) seconds, end None to the end, counted as the
    pipeline counts them (_build_chunk_mask: whole frames down, at least one frame, inside the song)."""
    a = int(start * frames_per_second)
    b = int(end * frames_per_second) if end is not None else frames
    a = max(0, min(a, frames - 1))
    return a, max(a + 1, min(b, frames))
