"""Stable Audio 3's generation, one function per arrow: conditions -> DiT steps -> SAME decode.

Built as diffusers' StableAudio3Pipeline (and its audio-to-audio and inpaint pipelines) build them, so that
on the CPU in float32 the same seed gives the same audio:

    text ──T5Gemma──► [B, 256, D] ─┐
    seconds ──embedder──► [B, D] ──┼─► context [B, 257, D] (the seconds as one more token), global [B, D]
                                   ▼
    noise [B, C, L] ──DiT steps on the log-SNR schedule (ping-pong or Euler)──► latents ──SAME──► audio
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..diffusion.noise import row_noise
from .parts import LOGSNR_RANGE, StableAudio3Parts

log = logging.getLogger("tunesmith")

TEXT_CACHE = 8  # sets of prompts whose T5Gemma states are kept


@dataclass
class Conditions:
    """What the DiT reads besides the latents, for B rows (2B with guidance: the unconditioned rows first)."""

    context: torch.Tensor  # [B', 257, D_text]: the prompt's tokens, then the seconds token
    context_mask: torch.Tensor  # [B', 257]: 1 for a token, 0 for padding (the DiT swaps in its padding embedding)
    seconds: torch.Tensor  # [B', D_text]: the global (AdaLN) condition
    local: torch.Tensor | None = None  # [B', 1 + C, L]: repaint's keep mask and kept latents


def latent_length(parts: StableAudio3Parts, seconds: float) -> int:
    """Latents for `seconds` of audio, rounded up (as the pipelines round), to whole chunks for SAME-S."""
    config = parts.config
    length = int(math.ceil(seconds * config.sample_rate / config.hop))
    return -(-length // config.latent_multiple) * config.latent_multiple


def text_states(parts: StableAudio3Parts, texts: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    """T5Gemma states of each text, padded to 256 tokens -> (states [B, 256, D] float32, mask [B, 256]);
    each distinct text encoded once (a prompt's variations share it, as the pipeline repeats its states),
    and the states of the last few sets of prompts kept (encoded as one batch, so reused exactly)."""
    length = min(getattr(parts.tokenizer, "model_max_length", parts.config.text_tokens), parts.config.text_tokens)
    distinct = list(dict.fromkeys(texts))
    batch = parts.tokenizer(distinct, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    if any(len(ids) > length for ids in parts.tokenizer(distinct, verbose=False).input_ids):
        log.warning("a prompt is longer than the %d tokens the text encoder reads: its end is ignored", length)
    key = (tuple(distinct), str(device))
    if key in parts.text_cache:  # the same prompts again (another seed, length or strength): not encoded again
        states, mask = parts.text_cache[key]
    else:
        ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
        states = parts.text_encoder(ids, attention_mask=mask)[0].float()  # [distinct, 256, D]
        if len(parts.text_cache) >= TEXT_CACHE:
            parts.text_cache.pop(next(iter(parts.text_cache)))
        parts.text_cache[key] = (states, mask)
    rows = torch.tensor([distinct.index(t) for t in texts], device=device)
    return states[rows], mask[rows]


def encode_conditions(parts: StableAudio3Parts, texts: list[str], seconds: float, guided: bool,
                      negative: str | None) -> Conditions:
    """The conditions of B rows; with guidance 2B, the unconditioned rows (the negative prompt's, or the
    empty prompt's, as the pipeline encodes them) first."""
    device = next(parts.seconds.parameters()).device
    rows = len(texts)
    sides = ([negative or ""] * rows if guided else []) + texts
    states, mask = text_states(parts, sides, device)
    embedded = parts.seconds(torch.full((rows,), float(seconds), dtype=torch.float32, device=device))  # [B, D]
    if guided:
        embedded = torch.cat([embedded, embedded])
    context = torch.cat([states, embedded.unsqueeze(1).to(states.dtype)], dim=1)  # [B', 257, D]
    context_mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)  # [B', 257]
    return Conditions(context, context_mask, embedded)


def noise_levels(parts: StableAudio3Parts, steps: int, start: float = 1.0) -> torch.Tensor:
    """Noise levels [steps + 1] float32 from `start` down to 0: a line from `start` to 0 mapped through
    log-SNR = 2 - t * 8.2 to sigmoid(-log-SNR), its first level set to `start` exactly (the level the
    latents were noised to), then the scheduler's shift; the last is 0. A start below 1 is audio-to-audio:
    its first two levels need not decrease (the reference's schedule, kept for parity)."""
    low, high = LOGSNR_RANGE
    t = torch.linspace(start, 0.0, steps + 1)
    sigmas = torch.sigmoid(-(high - t * (high - low)))
    sigmas[0] = start
    sigmas[-1] = 0.0
    shift = parts.config.shift
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def velocity(parts: StableAudio3Parts, x: torch.Tensor, t: torch.Tensor, cond: Conditions, cfg: float) -> torch.Tensor:
    """The DiT's velocity for latents x [B, C, L] at level t, guided: uncond + cfg * (cond - uncond)."""
    guided = cond.context.shape[0] == 2 * x.shape[0]
    model_in = torch.cat([x, x]) if guided else x
    dtype = parts.transformer.dtype
    level = (t * parts.config.timestep_scale).expand(model_in.shape[0])  # the DiT keeps its time step in float32
    local = None if cond.local is None else cond.local.to(dtype)
    out = parts.transformer(model_in.to(dtype), level, encoder_hidden_states=cond.context.to(dtype),
                            global_hidden_states=cond.seconds.to(dtype), encoder_attention_mask=cond.context_mask,
                            local_add_cond=local, return_dict=False)[0].float()
    if not guided:
        return out
    uncond, text = out.chunk(2)
    return uncond + cfg * (text - uncond)


def sample(parts: StableAudio3Parts, x: torch.Tensor, cond: Conditions, levels: torch.Tensor, cfg: float,
           generators: list[torch.Generator], report: Callable[[int], None] | None,
           on_level: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
    """Rectified flow from latents x [B, C, L] at levels[0] to clean latents at levels[-1] = 0, the DiT
    predicting v = noise - data. "pingpong" (post-trained) jumps to the clean estimate x - t * v each step
    and noises it again to the next level with fresh noise (drawn even for the last level, 0, as the
    pipeline draws it); "euler" follows the flow. report(steps done) after each step; on_level(t) before
    each step's DiT call (adapters with a noise-level interval swap there)."""
    steps = levels.shape[0] - 1
    for i in range(steps):
        t, t_next = levels[i], levels[i + 1]
        if on_level:
            on_level(t)
        v = velocity(parts, x, t, cond, cfg)  # [B, C, L]
        if parts.config.sampler == "pingpong":
            clean = x - t * v
            x = (1 - t_next) * clean + t_next * row_noise(generators, tuple(x.shape[1:])).to(x.device)
        else:
            x = x + (t_next - t) * v
        if report:
            report(i + 1)
    return x


def encode_audio(parts: StableAudio3Parts, audio: torch.Tensor, length: int) -> torch.Tensor:
    """Audio [B, channels, samples] -> latents [B, C, length]: encoded whole, then cut or padded with zeros."""
    vae = parts.vae
    latents = vae.encode(audio.to(next(vae.parameters()).dtype)).latents.float()
    if latents.shape[2] < length:
        latents = torch.nn.functional.pad(latents, (0, length - latents.shape[2]))
    return latents[:, :, :length]


def keep_mask(parts: StableAudio3Parts, spans: list[tuple[float, float]], length: int, device) -> torch.Tensor:
    """[1, 1, L]: 0 on the latents of each (start, end) span in seconds, 1 elsewhere (as the pipeline
    rounds: both ends down)."""
    rate, hop = parts.config.sample_rate, parts.config.hop
    mask = torch.ones(1, 1, length, device=device)
    for start, end in spans:
        mask[:, :, int(start * rate / hop):min(int(end * rate / hop), length)] = 0.0
    return mask
