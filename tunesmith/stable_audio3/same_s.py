"""SAME-S, the autoencoder of Stable Audio 3 Small, from Stability's definitions (models/autoencoders.py,
TransformerResamplingBlock with chunk_midpoint_shift and conv_mapping). diffusers' AutoencoderSAME has only
SAME-L's sliding band; SAME-S differs in two places, both here:

- attention in chunks of two latents' tokens (34 = 2 x 17: each latent is 16 frames + 1 token), the first half
  of the layers on chunks aligned at 0, the second half on chunks shifted by 17, the sequence padded at
  each end with a copy of its own first and last 17 tokens (the "midpoint shift"):

      layers 0-2:   |a0 a1|a2 a3|a4 a5|              (aN: the 17 tokens of latent N)
      layers 3-5:   |a0 a0|a1 a2|a3 a4|a5 a5|  -> the copies dropped again

- a 3-tap convolution maps the decoder's tokens to patches (conv_mapping), where SAME-L has 1.

The transformer layers themselves are SAME-L's (diffusers' TransformerBlock: DyT norms, differential
attention with DyT q/k norms and rotary positions counted within each chunk, a GLU feed-forward).
Decoding is deterministic: the reference's training-time noise on the new tokens (mask_noise) and on the
latents (the bottleneck's noise_regularize, 1e-3 of their scale) is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SAMESConfig:
    audio_channels: int = 2
    patch_size: int = 256  # audio samples per frame
    width: int = 768  # the transformer's width (channels x c_mult)
    stride: int = 16  # frames per latent
    depth: int = 6  # transformer layers per resampling block
    latent_dim: int = 256
    dim_heads: int = 64
    ff_mult: int = 3
    differential: bool = True
    chunk_size: int = 32  # frames per attention chunk (two latents)
    midpoint_shift: bool = True
    encoder_mapping_taps: int = 1
    decoder_mapping_taps: int = 3
    sinusoidal_blocks: int = 0  # trailing decoder layers with sin(pi x) gates (SAME-L's 8; SAME-S none)
    sample_rate: int = 44100

    @property
    def hop(self) -> int:
        return self.patch_size * self.stride

    @property
    def latents_per_chunk(self) -> int:
        return self.chunk_size // self.stride


class ChunkedResampling(nn.Module):
    """One resampling block of SAME-S: frames -> latents (encoder) or latents -> frames (decoder) through
    transformer layers over per-latent segments of stride + 1 tokens, attending within chunks."""

    def __init__(self, config: SAMESConfig, encoder: bool, in_channels: int, out_channels: int, taps: int,
                 sinusoidal_blocks: int = 0):
        from diffusers.models.autoencoders.autoencoder_same import TransformerBlock

        super().__init__()
        if config.chunk_size % config.stride:
            raise ValueError(f"SAME chunk size {config.chunk_size} is not a multiple of its stride {config.stride}")
        self.config, self.encoder = config, encoder
        # the reference's weight-normed convolution, its weight folded on loading (g * v / |v|)
        self.mapping = nn.Conv1d(in_channels, out_channels, taps, padding=taps // 2)
        width = config.width
        self.transformers = nn.ModuleList([
            TransformerBlock(width, dim_heads=min(config.dim_heads, width), use_differential=config.differential,
                             ff_mult=config.ff_mult, sinusoidal=(config.depth - i) < sinusoidal_blocks)
            for i in range(config.depth)])
        self.new_tokens = nn.Parameter(torch.zeros(1, 1, width))  # one shared token (the reference's variable_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._encode(x) if self.encoder else self._decode(x)

    def _encode(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, C_in, T] frames -> [B, D, N] latents, N = T rounded up to whole chunks, over stride."""
        B, S = frames.shape[0], self.config.stride
        frames = F.pad(frames, (0, -frames.shape[2] % self.config.chunk_size))  # zeros before the mapping
        x = self.mapping(frames).transpose(1, 2)  # [B, T, D]
        N = x.shape[1] // S
        x = torch.cat([x.reshape(B * N, S, -1), self.new_tokens.expand(B * N, 1, -1)], dim=1)  # [B N, S + 1, D]
        x = self._attend(x.reshape(B, N * (S + 1), -1))
        return x.reshape(B, N, S + 1, -1)[:, :, -1].transpose(1, 2)  # each segment's new token: [B, D, N]

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """[B, D, L] -> [B, C_out, L' * stride] frames, L' = L rounded up to whole chunks."""
        B, S = latents.shape[0], self.config.stride
        x = F.pad(latents, (0, -latents.shape[2] % self.config.latents_per_chunk)).transpose(1, 2)  # [B, L', D]
        L = x.shape[1]
        x = torch.cat([x.reshape(B * L, 1, -1), self.new_tokens.expand(B * L, S, -1)], dim=1)  # [B L, 1 + S, D]
        x = self._attend(x.reshape(B, L * (S + 1), -1))
        x = x.reshape(B, L, S + 1, -1)[:, :, 1:].reshape(B, L * S, -1)  # the new tokens: [B, L S, D]
        return self.mapping(x.transpose(1, 2))

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        """The transformer layers over [B, n, D] tokens, in chunks; the second half of them on chunks shifted
        by half a chunk, the ends padded with copies of the first and last half chunk."""
        B, n, D = x.shape
        chunk = self.config.latents_per_chunk * (self.config.stride + 1)  # tokens: 34 for SAME-S
        split = len(self.transformers) // 2 if self.config.midpoint_shift else len(self.transformers)
        x = x.reshape(-1, chunk, D)  # [B chunks, chunk, D]
        for layer in self.transformers[:split]:
            x = layer(x)
        x = x.reshape(B, n, D)
        if split == len(self.transformers):
            return x
        half = chunk // 2
        x = torch.cat([x[:, :half], x, x[:, -half:]], dim=1).reshape(-1, chunk, D)
        for layer in self.transformers[split:]:
            x = layer(x)
        return x.reshape(B, n + chunk, D)[:, half:-half]


class AutoencoderSAMES(nn.Module):
    """SAME-S: audio [B, channels, samples] <-> latents [B, latent_dim, samples / hop], with the encode and
    decode results shaped as diffusers' AutoencoderSAME gives them (.latents, .sample)."""

    def __init__(self, config: SAMESConfig):
        from diffusers.models.autoencoders.autoencoder_same import PatchEmbed, SoftNormBottleneck

        super().__init__()
        self.config = config
        frames = config.audio_channels * config.patch_size
        self.patch_embed = PatchEmbed(config.patch_size)
        self.encoder_block = ChunkedResampling(config, True, frames, config.width, config.encoder_mapping_taps)
        self.encoder_proj = nn.Linear(config.width, config.latent_dim)
        self.bottleneck = SoftNormBottleneck(config.latent_dim)
        self.decoder_proj = nn.Linear(config.latent_dim, config.width)
        self.decoder_block = ChunkedResampling(config, False, config.width, frames, config.decoder_mapping_taps,
                                               config.sinusoidal_blocks)

    @property
    def downsampling_ratio(self) -> int:
        return self.config.hop

    def encode(self, audio: torch.Tensor):
        from diffusers.models.autoencoders.autoencoder_same import AutoencoderSAMEOutput

        x = self.encoder_block(self.patch_embed.encode(audio))  # [B, D, N]
        latents = self.encoder_proj(x.transpose(1, 2)).transpose(1, 2)  # [B, latent_dim, N]
        return AutoencoderSAMEOutput(latents=self.bottleneck.encode(latents))

    def decode(self, latents: torch.Tensor):
        from diffusers.models.autoencoders.autoencoder_same import AutoencoderSAMEDecoderOutput

        x = self.decoder_proj(self.bottleneck.decode(latents).transpose(1, 2)).transpose(1, 2)  # [B, D, L]
        return AutoencoderSAMEDecoderOutput(sample=self.patch_embed.decode(self.decoder_block(x)))
