"""The parts of a Stable Audio 3 model, whichever layout they were loaded from: a T5Gemma text encoder,
the seconds embedder, the DiT (diffusers' StableAudio3DiTModel) and the SAME autoencoder."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..quiet import quiet_loading

LOGSNR_RANGE = (-6.2, 2.0)  # the schedule's log-SNR at pure noise and at its last noisy level (both pipelines)
TEXT_TOKENS = 256  # T5Gemma tokens of the prompt, padded to this many


@dataclass
class StableAudio3Config:
    sample_rate: int  # 44100
    hop: int  # audio samples per latent (4096)
    latent_dim: int  # 256
    audio_channels: int  # 2
    longest: float  # seconds made at once
    sampler: str  # "pingpong" (post-trained checkpoints) or "euler" (base)
    steps: int  # default number of steps
    cfg: float = 1.0  # default guidance (1: off)
    timestep_scale: float = 1.0  # the DiT reads the noise level times this (the scheduler's num_train_timesteps)
    shift: float = 1.0  # the scheduler's time shift, applied to the log-SNR schedule as diffusers does
    text_tokens: int = TEXT_TOKENS
    latent_multiple: int = 1  # latents come in multiples of this (SAME-S attends in chunks of 2 latents)

    @property
    def latents_per_second(self) -> float:
        return self.sample_rate / self.hop


@dataclass
class StableAudio3Parts:
    config: StableAudio3Config
    tokenizer: object  # a transformers Gemma tokenizer
    text_encoder: nn.Module  # transformers T5GemmaEncoderModel: ids [B, T] -> [B, T, D_text]
    seconds: nn.Module  # StableAudio3DurationEmbedder: seconds [B] -> [B, D_text]
    transformer: nn.Module  # diffusers StableAudio3DiTModel
    vae: nn.Module  # diffusers AutoencoderSAME (SAME-L; SAME-S comes with the Stability layout)
    text_cache: dict = field(default_factory=dict)  # (prompts, device) -> T5Gemma (states, mask): sample.text_states
    half_decoder: list | None = None  # the SAME decoder's half-precision layers on a GPU (model.py), made once

    def to(self, device: torch.device, dtype: torch.dtype) -> "StableAudio3Parts":
        """The DiT in `dtype`; the text encoder, the embedder and the autoencoder in float32 (SAME's
        differential attention cancels in half precision, and the others run once per clip)."""
        self.text_cache.clear()
        self.half_decoder = None
        with quiet_loading():
            for module in (self.text_encoder, self.seconds, self.vae):
                module.to(device, torch.float32)
            self.transformer.to(device, dtype)
            keep_rotary_float32(self.transformer)
        return self


ROPE_BASE = 10000  # StableAudio3RotaryEmbedding's (and Stability's)


def keep_rotary_float32(transformer: nn.Module):
    """The DiT's rotary frequencies back in float32 after a cast to half precision: diffusers counts the
    positions in the buffer's dtype, and bfloat16 holds whole numbers exactly only up to 256, so every
    token past about 20 s would turn by the wrong angle (Stability's CPU notes: renders past 2 minutes
    broke until RoPE stayed float32). Recomputed as the module computes them, on the CPU."""
    rotary = getattr(transformer, "rotary_pos_emb", None)
    if rotary is None or rotary.inv_freq.dtype == torch.float32:
        return
    dim = 2 * rotary.inv_freq.numel()
    inv_freq = 1.0 / (ROPE_BASE ** (torch.arange(0, dim, 2).float() / dim))
    rotary.inv_freq = inv_freq.to(rotary.inv_freq.device)
