"""ACE-Step 1.5's text2music and repaint, one function per arrow: texts -> conditions -> DiT steps (flow matching).

Everything is computed as diffusers' AceStepPipeline computes it, so that on the CPU in float32 the same
seed gives the same latents; what differs is said where it does (the latents stay float32 between
steps on every device; rows of different captions are never padded together).
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import torch

from ..audio.meter import Meter
from .parts import LYRIC_TOKENS, SHIFT, TEXT_TOKENS, AceStepParts
from .prompt import INSTRUCTION, caption_text, lyrics_text

log = logging.getLogger("tunesmith")

TIMBRE_SECONDS = 30  # the timbre encoder reads 30 s of reference latents (learned silence without one)


def encode_conditions(parts: AceStepParts, caption: str, lyrics: str, language: str, seconds: float,
                      instruction: str = INSTRUCTION, meter: Meter | None = None) -> torch.Tensor:
    """One caption and its lyrics -> the DiT's cross-attention states [1, S, D]: the caption through
    the whole text encoder, the lyrics through its token embeddings only (the condition encoder's
    lyric encoder gives them context), the learned silence for timbre, all packed by the condition
    encoder. One row alone has no padding, so its states do not depend on other rows."""
    tokenizer, encoder = parts.tokenizer, parts.text_encoder
    device = next(encoder.parameters()).device
    text, lyric = caption_text(caption, seconds, instruction, meter), lyrics_text(lyrics, language)
    for what, value, limit in (("the prompt", text, TEXT_TOKENS), ("the lyrics", lyric, LYRIC_TOKENS)):
        n = len(tokenizer(value).input_ids)
        if n > limit:
            log.warning("%s take %d tokens, more than the %d the model reads: the rest is ignored", what, n, limit)
    text_in = tokenizer([text], padding="longest", truncation=True, max_length=TEXT_TOKENS, return_tensors="pt")
    lyric_in = tokenizer([lyric], padding="longest", truncation=True, max_length=LYRIC_TOKENS, return_tensors="pt")
    text_states = encoder(input_ids=text_in.input_ids.to(device)).last_hidden_state  # [1, T, D_text]
    lyric_states = encoder.get_input_embeddings()(lyric_in.input_ids.to(device))  # [1, T_lyric, D_text]
    condition = parts.condition_encoder
    silence = condition.silence_latent[:, :math.ceil(TIMBRE_SECONDS * parts.config.frames_per_second)]
    states, _ = condition(text_hidden_states=text_states, text_attention_mask=text_in.attention_mask.to(device).bool(),
                          lyric_hidden_states=lyric_states,
                          lyric_attention_mask=lyric_in.attention_mask.to(device).bool(),
                          refer_audio_acoustic_hidden_states_packed=silence.to(device, text_states.dtype),
                          refer_audio_order_mask=torch.zeros(1, dtype=torch.long, device=device))
    return states  # [1, S, D]


def context_latents(parts: AceStepParts, frames: int, rows: int, source: torch.Tensor | None = None,
                    span: tuple[int, int] | None = None) -> torch.Tensor:
    """What the DiT gets beside the noise: source latents and a mask (1: generate, 0: keep), [rows, frames, 2 C].
    text2music: the learned silence (tiled to `frames`) as the source, a mask of ones. repaint: the
    source [rows, frames, C] with the learned silence inside the span [a, b) of frames, the mask 1 there."""
    silence = parts.condition_encoder.silence_latent  # [1, 15000, C]
    if silence.shape[1] < frames:
        silence = silence.repeat(1, -(-frames // silence.shape[1]), 1)
    silence = silence[:, :frames].to(dtype=parts.transformer.dtype)  # [1, frames, C]
    if source is None:
        return torch.cat([silence, torch.ones_like(silence)], dim=-1).expand(rows, -1, -1)
    mask = torch.zeros_like(silence)
    mask[:, span[0]:span[1]] = 1.0
    kept = torch.where(mask > 0.5, silence, source.to(silence.device, silence.dtype))  # [rows, frames, C]
    return torch.cat([kept, mask.expand_as(kept)], dim=-1)


def timestep_schedule(steps: int, shift: float = SHIFT) -> list[float]:
    """t from 1 (noise) towards 0 in `steps` steps, shifted: t' = s t / (1 + (s - 1) t); the scheduler
    appends the final 0. float32 values, as the pipeline computes them."""
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float32)
    if shift != 1.0:
        t = shift * t / (1 + (shift - 1) * t)
    return t[:-1].tolist()


def sample(parts: AceStepParts, noise: torch.Tensor, states: torch.Tensor, context: torch.Tensor, steps: int,
           cfg: float, report: Callable[[int], None] | None = None) -> torch.Tensor:
    """Euler steps of the flow from noise [B, L, C] (float32) to latents [B, L, C] (float32).

    cfg > 1: guidance against the learned null condition, with APG (adaptive projected guidance,
    momentum -0.75, norm threshold 2.5), the pipeline's recipe for base/sft. report(i) after step i."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer, normalized_guidance

    dit = parts.transformer
    dtype, rows = dit.dtype, noise.shape[0]
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(parts.scheduler.config)  # fresh state per call
    scheduler.set_timesteps(sigmas=timestep_schedule(steps), device=noise.device)
    guided = cfg > 1
    states = states.to(dtype).expand(rows, -1, -1)
    if guided:
        null = parts.condition_encoder.null_condition_emb.to(states.device, dtype).expand_as(states)
        states, context = torch.cat([states, null]), torch.cat([context, context])
        momentum = MomentumBuffer(momentum=-0.75)
    x = noise
    for i, t in enumerate(scheduler.timesteps):
        model_in = torch.cat([x, x]) if guided else x
        time = torch.full((model_in.shape[0],), float(t), device=x.device, dtype=dtype)
        v = dit(hidden_states=model_in.to(dtype), timestep=time, timestep_r=time, encoder_hidden_states=states,
                context_latents=context, return_dict=False)[0].float()  # [B', L, C]
        if guided:
            cond, uncond = v.chunk(2)
            v = normalized_guidance(cond, uncond, cfg - 1.0, momentum, eta=0.0, norm_threshold=2.5,
                                    use_original_formulation=True, norm_dim=(1,))
        x = scheduler.step(v, t, x, return_dict=False)[0]  # x + (t_next - t) v
        if report:
            report(i + 1)
    return x
