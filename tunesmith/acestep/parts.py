"""The parts of an ACE-Step 1.5 pipeline and the sizes and defaults read from its config files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..quiet import quiet_loading
from .options import LONGEST, SHORTEST  # noqa: F401 (read from here by the model and the layout)

TURBO_STEPS, GUIDED_STEPS = 8, 50  # turbo is distilled for 8 steps; base/sft: ACE-Step's recommended 50
GUIDED_CFG = 7.0  # AceStepPipeline's default guidance for base/sft (APG)
SHIFT = 3.0  # AceStepPipeline's default timestep shift
TEXT_TOKENS, LYRIC_TOKENS = 256, 2048  # AceStepPipeline's max_text_length and max_lyric_length


@dataclass
class AceStepConfig:
    sample_rate: int  # 48000
    hop: int  # audio samples per latent frame (1920: 25 frames a second)
    audio_channels: int  # 2
    latent_dim: int  # channels of a latent frame (64)
    turbo: bool  # guidance distilled into the weights: no cfg
    steps: int  # default number of steps
    cfg: float  # default guidance (1: none)

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop


@dataclass
class AceStepParts:
    config: AceStepConfig
    tokenizer: object  # a transformers fast tokenizer (Qwen3's)
    text_encoder: nn.Module  # transformers Qwen3Model: ids [B, T] -> [B, T, D_text]
    condition_encoder: nn.Module  # diffusers AceStepConditionEncoder: text, lyrics, timbre -> [B, S, D]
    transformer: nn.Module  # diffusers AceStepTransformer1DModel (or the CPU path's acestep/cpu.py DiTCPU):
    #                         latents [B, L, C] -> velocity [B, L, C]
    vae: nn.Module  # diffusers AutoencoderOobleck (only its decoder is used)
    scheduler: object  # diffusers FlowMatchEulerDiscreteScheduler (num_train_timesteps=1, shift=1)
    decoder: Callable | None = None  # latents [B, C, T] -> audio [B, channels, T * hop] float32, in place of
    #                                  vae.decoder (the CPU path's bfloat16 Oobleck decoder)

    def to(self, device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype,
           dit_dtype: torch.dtype | None = None) -> "AceStepParts":
        """The text and condition encoders in `dtype`, the DiT in `dit_dtype` (default `dtype`), the VAE in
        `vae_dtype` (the CPU path's DiTCPU stays as it is: its .to keeps the CPU and its own dtypes)."""
        with quiet_loading():
            for module in (self.text_encoder, self.condition_encoder):
                module.to(device, dtype)
            self.transformer.to(device, dit_dtype or dtype)
            self.vae.to(device, vae_dtype)
        return self
