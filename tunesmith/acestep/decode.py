"""Latents -> audio with the Oobleck VAE's decoder, window by window, then the pipeline's peak normalisation.

diffusers' pipeline decodes the whole song at once (tiling is off by default): for 10 minutes at 48 kHz
the decoder's last layers alone hold about 15 GB per tensor. Here each window of latent frames is
decoded with `reach` frames of margin on each side, as many as any of its output samples depends on,
and the margins are cut away: the joined audio is the whole-song decode's (up to float rounding), in
memory bounded by the window.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

WINDOW_FRAMES = 256  # latent frames decoded at once: about 10 s at 25 frames a second
PEAK_DBFS = -1.0  # the pipeline scales every song to this peak


def reach(decoder: nn.Module) -> int:
    """Latent frames each side that an output sample depends on (the decoder's receptive field, rounded
    up), walked back from the output through diffusers' OobleckDecoder layers."""
    r = decoder.conv2.padding[0]
    for block in reversed(decoder.block):
        for unit in (block.res_unit1, block.res_unit2, block.res_unit3):
            r += unit.conv1.padding[0]  # a "same" conv of dilation d, kernel 7: 3 d each side
        up = block.conv_t1
        r = -(-(r + up.padding[0]) // up.stride[0]) + 1  # input frames a transposed conv's output window reads
    return r + decoder.conv1.padding[0]


def windows(frames: int, window: int = WINDOW_FRAMES) -> list[tuple[int, int]]:
    """[start, end) latent frames of each window."""
    return [(a, min(a + window, frames)) for a in range(0, frames, window)]


def decode(vae: nn.Module, latents: torch.Tensor, window: int = WINDOW_FRAMES,
           report: Callable[[], None] | None = None, decoder: Callable | None = None) -> torch.Tensor:
    """latents [B, L, C] -> audio [B, channels, L * hop] float32 on the CPU. report() after each window.
    decoder: in place of vae.decoder, the same function (the CPU path's OobleckDecoderCPU)."""
    hop = vae.hop_length
    margin = reach(vae.decoder)
    decoder = decoder or vae.decoder
    z = latents.transpose(1, 2).to(vae.dtype)  # [B, C, L]
    B, _, L = z.shape
    audio = None
    for a, b in windows(L, window):
        lo, hi = max(a - margin, 0), min(b + margin, L)
        part = decoder(z[:, :, lo:hi]).float()  # [B, channels, (hi - lo) * hop]
        if audio is None:
            audio = torch.empty(B, part.shape[1], L * hop)
        audio[:, :, a * hop:b * hop] = part[:, :, (a - lo) * hop:(b - lo) * hop].cpu()
        if report:
            report()
    return audio


def normalize(audio: torch.Tensor) -> torch.Tensor:
    """As the pipeline: a song that peaks above 1 is brought down to 1, then every song is scaled to
    peak at -1 dBFS (so a silent decoder's output stays silent and a broken one's shows at full scale).
    [B, channels, N], in place."""
    peak = audio.abs().amax(dim=[1, 2], keepdim=True)
    if torch.any(peak > 1.0):
        audio /= peak.clamp(min=1.0)
    peak = audio.abs().amax(dim=[1, 2], keepdim=True).clamp(min=1e-6)
    audio *= 10.0 ** (PEAK_DBFS / 20.0) / peak
    return audio
