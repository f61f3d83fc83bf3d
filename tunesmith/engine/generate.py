"""The decode loop: set the condition, then one step per codec frame (plus the pattern's delay)."""

from __future__ import annotations

from typing import Callable

import torch

from .conditioning import with_null_condition
from .lm import MusicGenLM
from .patterns import delay_mask, delay_offsets, revert_delay
from .sampling import SamplingParams, guidance_mix, sample

Progress = Callable[[int, int], None]


def decode_step(lm: MusicGenLM, codes: torch.Tensor, pos: torch.Tensor, params: SamplingParams,
                seeds: torch.Tensor, kv_len: int | None = None) -> torch.Tensor:
    """codes [B, K] at position pos [1] -> next codes [B, K]. Fixed shapes, no data-dependent branches."""
    if params.cfg > 1:
        codes = torch.cat([codes, codes])  # conditional rows, then unconditional
    logits = lm(codes[:, :, None], pos, kv_len)[:, :, -1]  # [B2, K, V]
    if params.cfg > 1:
        logits = guidance_mix(logits, params.cfg)  # [B, K, V]
    return sample(logits, params, seeds, pos[0])


@torch.inference_mode()
def generate_codes(lm: MusicGenLM, text_states: torch.Tensor, text_mask: torch.Tensor, n_frames: int,
                   params: SamplingParams, seeds: torch.Tensor, progress: Progress | None = None) -> torch.Tensor:
    """Text condition [B, S, text_dim] / [B, S] -> codes [B, K, n_frames]."""
    cfg = lm.cfg
    B, device = text_states.shape[0], seeds.device
    offsets = delay_offsets(cfg.n_codebooks, cfg.audio_channels)
    steps = n_frames + max(offsets)
    if params.cfg > 1:
        text_states, text_mask = with_null_condition(text_states, text_mask)
    lm.setup_cache(batch=text_states.shape[0], max_len=steps + 1)
    lm.set_condition(text_states, text_mask)

    valid = delay_mask(n_frames, offsets, device)  # [K, steps]
    seq = torch.full((B, cfg.n_codebooks, steps + 1), cfg.pad_token, dtype=torch.long, device=device)  # BOS at 0
    positions = torch.arange(steps + 1, device=device)
    for t in range(steps):
        nxt = decode_step(lm, seq[:, :, t], positions[t : t + 1], params, seeds, t + 1)  # [B, K]
        seq[:, :, t + 1] = torch.where(valid[:, t], nxt, cfg.pad_token)
        if progress is not None:
            progress(t + 1, steps)
    return revert_delay(seq[:, :, 1:], offsets, n_frames)
