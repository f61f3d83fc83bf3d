"""Stable Audio Open's generation, one function per arrow: conditions -> DiT steps -> VAE decode.

The conditions are built as diffusers' StableAudioPipeline builds them (and stable-audio-tools, whose
DiT ignores the text mask too), so that on the CPU in float32 the same seed gives the same audio.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion.noise import row_noise
from .parts import StableAudioParts

log = logging.getLogger("tunesmith")

SECONDS_START = 0.0  # where the clip starts in the (virtual) longer piece: always its beginning


def encode_conditions(parts: StableAudioParts, texts: list[str], seconds: float, guided: bool,
                      negative: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (cross-attention states [B', T + n, D], global states [B', 1, Dg]), B' = 2B with guidance:
    the unconditioned rows first (the negative prompt's, or zeros without one)."""
    device = next(parts.text_projection.parameters(), next(parts.seconds.parameters())).device
    with_negative = guided and negative is not None
    tokens = _text_states(parts, ([negative] * len(texts) if with_negative else []) + texts, device)
    numbers = {"seconds_start": SECONDS_START, "seconds_end": seconds, "seconds_total": seconds}
    rows = tokens.shape[0]
    embedded = {}
    for name, embedder in parts.seconds.items():
        value = torch.full((rows,), float(numbers[name]), device=device)
        embedded[name] = embedder(value)  # [B', 1, D]
    embedded["prompt"] = tokens
    cross = torch.cat([embedded[i] for i in parts.config.cross_ids], dim=1)  # [B', T + n, D]
    global_states = torch.cat([embedded[i] for i in parts.config.global_ids], dim=2)  # [B', 1, Dg]
    if guided and not with_negative:
        cross = torch.cat([torch.zeros_like(cross), cross])
        global_states = torch.cat([global_states, global_states])
    return cross, global_states


def _text_states(parts: StableAudioParts, texts: list[str], device) -> torch.Tensor:
    """T5 states of each text, projected, zero at padding: [B, T, D]."""
    batch = parts.tokenizer(texts, padding="max_length", max_length=parts.text_max_length, truncation=True,
                            return_tensors="pt")
    if any(len(ids) > parts.text_max_length for ids in parts.tokenizer(texts, verbose=False).input_ids):
        log.warning("a prompt is longer than the %d tokens the text encoder reads: its end is ignored",
                    parts.text_max_length)
    ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
    states = encode_text(parts.text_encoder, ids, mask)  # [B, T, 768]
    states = parts.text_projection(states.to(next(parts.text_projection.parameters(), states).dtype))
    return states * mask.unsqueeze(-1).to(states.dtype)


def encode_text(text_encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """T5 states of padded prompts, zero at the padding: ids, mask [B, T] -> [B, T, D] float32.

    Runs the encoder over the longest prompt's tokens only (T5 pads on the right): with the mask,
    a token's state does not depend on the padding after it (masked keys get no weight, and T5's
    position bias depends on distances only), and the padding's states are zeroed anyway, as both
    pipelines zero them."""
    T = input_ids.shape[1]
    right_padded = torch.equal(attention_mask, attention_mask.cummin(1).values)
    n = max(int(attention_mask.sum(1).max()), 1) if right_padded else T
    mask = attention_mask[:, :n]
    states = text_encoder(input_ids=input_ids[:, :n], attention_mask=mask)[0].float()  # [B, n, D]
    return F.pad(states * mask.unsqueeze(-1).to(states.dtype), (0, 0, 0, T - n))


def rotary_embedding(parts: StableAudioParts, n_tokens: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin for rotary attention over half of each head's dimensions (as both implementations)."""
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    dim = parts.config.rotary_dim or parts.transformer.config.attention_head_dim // 2
    cos, sin = get_1d_rotary_pos_embed(dim, n_tokens, use_real=True, repeat_interleave_real=False)
    return cos.to(device), sin.to(device)


def velocity(parts: StableAudioParts, x: torch.Tensor, t: torch.Tensor, cross: torch.Tensor,
             global_states: torch.Tensor, rotary, cfg: float) -> torch.Tensor:
    """The DiT's output for latents x [B, C, L] at time t, guided: uncond + cfg * (cond - uncond)."""
    guided = cross.shape[0] == 2 * x.shape[0]
    model_in = torch.cat([x, x]) if guided else x
    dtype = parts.transformer.dtype
    out = parts.transformer(model_in.to(dtype), t.reshape(1).to(dtype), encoder_hidden_states=cross.to(dtype),
                            global_hidden_states=global_states.to(dtype), rotary_embedding=rotary,
                            return_dict=False)[0].to(x.dtype)
    if not guided:
        return out
    uncond, cond = out.chunk(2)
    return uncond + cfg * (cond - uncond)


def sample_dpmpp(parts: StableAudioParts, noise: torch.Tensor, cross, global_states, steps: int, cfg: float,
                 seeds: list[int], report: Callable[[int, int], None] | None, init: torch.Tensor | None = None,
                 strength: float = 1.0) -> torch.Tensor:
    """stable-audio-open-1.0: DPM-Solver++ (2M, SDE) on the cosine v-diffusion schedule, with diffusers'
    CosineDPMSolverMultistepScheduler. init: latents to start from, noised to the sigma `strength` sets
    (log-interpolated between the schedule's sigma_min and sigma_max)."""
    from diffusers import CosineDPMSolverMultistepScheduler

    config = dict(parts.config.scheduler)
    if init is not None:
        config["sigma_max"] = math.exp((1 - strength) * math.log(config["sigma_min"])
                                       + strength * math.log(config["sigma_max"]))
    scheduler = CosineDPMSolverMultistepScheduler.from_config(config)
    scheduler.set_timesteps(steps, device=noise.device)
    scheduler.noise_sampler = _BoundedBrownianNoise(noise, scheduler, seeds)
    if init is None:
        x = noise * scheduler.init_noise_sigma
    else:
        x = init + noise * config["sigma_max"]
    rotary = rotary_embedding(parts, x.shape[2] + global_states.shape[1], x.device)
    for i, t in enumerate(scheduler.timesteps):
        model_in = scheduler.scale_model_input(x, t)
        v = velocity(parts, model_in, t, cross, global_states, rotary, cfg)
        x = scheduler.step(v, t, x).prev_sample
        if report:
            report(i + 1, steps)
    return x


class _BoundedBrownianNoise:
    """diffusers' Brownian-tree noise, with each query kept inside the tree's interval.

    The scheduler builds its tree over [sigma_min, sigma_max] of its config but asks for noise between
    its discretised sigmas, which end at 0 and may start a few ulps above sigma_max; torchsde answers
    such a query by splitting its interval until Python's recursion limit (diffusers issue 13274).
    Clamping changes nothing that reaches the audio: the last step's noise is multiplied by sigma = 0."""

    def __init__(self, x: torch.Tensor, scheduler, seeds: list[int]):
        from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

        self.low, self.high = float(scheduler.config.sigma_min), float(scheduler.config.sigma_max)
        self.sampler = BrownianTreeNoiseSampler(x, self.low, self.high, seed=seeds)
        self.zeros = torch.zeros_like(x)

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        a, b = (torch.as_tensor(s).clamp(self.low, self.high) for s in (sigma, sigma_next))
        return self.zeros if a == b else self.sampler(a, b)


def decode(parts: StableAudioParts, latents: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """Latents [B, C, L] -> audio [B, channels, L * hop] in float32 (its first `length` samples)."""
    if parts.decoder is not None:
        return parts.decoder(latents, length=length)  # decodes only the frames those samples need
    vae = parts.vae
    return vae.decode(latents.to(vae.dtype)).sample.float()[:, :, :length]


def encode_audio(parts: StableAudioParts, audio: torch.Tensor) -> torch.Tensor:
    """Audio [B, channels, samples] -> latents [B, C, samples / hop]: the mean of the VAE's posterior
    (no sampling, so that strength 0 gives back the audio as the VAE renders it)."""
    vae = parts.vae
    return vae.encode(audio.to(vae.dtype)).latent_dist.mean.float()


def sample_flow(parts: StableAudioParts, noise: torch.Tensor, cross, global_states, steps: int, cfg: float,
                generators: list[torch.Generator], report: Callable[[int, int], None] | None, sampler: str,
                init: torch.Tensor | None = None, strength: float = 1.0) -> torch.Tensor:
    """stable-audio-open-small: rectified flow, x_t = (1 - t) * data + t * noise, the DiT predicting
    v = noise - data. "pingpong" (what ARC post-training made the model for) denoises fully at each
    step and noises again to the next t with fresh noise; "euler" follows the flow without new noise.
    init: latents to start from at t = strength."""
    from .pingpong import init_latents, pingpong_sigmas, pingpong_step

    t = pingpong_sigmas(steps, start=strength if init is not None else 1.0).to(noise.device)  # [steps + 1]
    x = noise if init is None else init_latents(init, noise, strength)
    rotary = rotary_embedding(parts, x.shape[2] + global_states.shape[1], x.device)
    for i in range(steps):
        v = velocity(parts, x, t[i], cross, global_states, rotary, cfg)  # [B, C, L]
        if sampler == "pingpong":
            x = pingpong_step(x, v, t[i], t[i + 1], row_noise(generators, tuple(x.shape[1:])).to(x.device))
        else:
            x = x + (t[i + 1] - t[i]) * v
        if report:
            report(i + 1, steps)
    return x
