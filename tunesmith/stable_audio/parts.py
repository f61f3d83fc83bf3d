"""The parts of a Stable Audio Open model, whichever layout they were loaded from.

Both checkpoints (1.0 in the diffusers layout, small in the stable-audio-tools layout) become the
same parts: a T5 text encoder, number embedders for the seconds conditions, a DiT
(diffusers' StableAudioDiTModel, with q/k LayerNorms for small), an Oobleck VAE and a sampler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..quiet import quiet_loading


@dataclass
class StableAudioConfig:
    sample_rate: int  # 44100
    sample_size: int  # latent frames the DiT makes at once (the longest clip)
    hop: int  # audio samples per latent frame (2048)
    audio_channels: int  # 2
    sampler: str  # "dpmpp-2m-sde" (1.0, diffusers' CosineDPMSolverMultistepScheduler) or "pingpong" (small)
    steps: int  # default number of steps
    cfg: float  # default guidance
    cross_ids: list[str]  # cross-attention tokens, in order: "prompt" and seconds conditions
    global_ids: list[str]  # seconds conditions concatenated (features) into the global embedding
    scheduler: dict = field(default_factory=dict)  # the dpmpp scheduler's config (sigma_min, sigma_max, ...)
    rotary_dim: int | None = None  # dims of each head that rotary attention turns; None: half the head
    #                                (diffusers' pipeline); stable-audio-tools uses max(head_dim // 2, 32)

    @property
    def max_seconds(self) -> float:
        return self.sample_size * self.hop / self.sample_rate


@dataclass
class StableAudioParts:
    config: StableAudioConfig
    tokenizer: object  # a transformers T5 tokenizer
    text_max_length: int  # tokens, padded to this length
    text_encoder: nn.Module  # transformers T5EncoderModel: ids [B, T] -> [B, T, 768]
    text_projection: nn.Module  # [B, T, 768] -> [B, T, D_cond] (Identity when the sizes agree)
    seconds: nn.ModuleDict  # condition id ("seconds_start", "seconds_end", "seconds_total") ->
    #                          diffusers StableAudioNumberConditioner: seconds [B] -> [B, 1, D_cond]
    transformer: nn.Module  # diffusers StableAudioDiTModel (small: with q/k LayerNorms set)
    vae: nn.Module  # diffusers AutoencoderOobleck
    decoder: Callable | None = None  # latents [B, C, L] -> audio [B, channels, L * hop] float32, in place of
    #                                  vae.decode (the CPU path's tiled decoder, cpu.OobleckDecoderCPU)

    def modules(self) -> list[nn.Module]:
        return [self.text_encoder, self.text_projection, self.seconds, self.transformer, self.vae]

    def to(self, device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype) -> "StableAudioParts":
        """The DiT in `dtype`, the VAE in `vae_dtype`; the text encoder and the embedders stay float32
        (they run once per clip)."""
        with quiet_loading():  # diffusers warns of casts with .to() for modules it would keep in float32: none
            for module in (self.text_encoder, self.text_projection, self.seconds):
                module.to(device, torch.float32)
            self.transformer.to(device, dtype)
            self.vae.to(device, vae_dtype)
        return self
