"""The ping-pong sampler of rectified-flow models distilled with ARC post-training (stable-audio-open-small).

Noise level t runs from 1 (pure noise) to 0 (clean latents); the DiT predicts the velocity v with
x_t = (1 - t) * x_0 + t * noise, so x_0 = x_t - t * v. Each step jumps to the clean estimate, then
re-noises it to the next level with fresh noise ("ping" to t=0, "pong" back up):

    t[0]=start ──DiT──► denoised ──fresh noise──► t[1] ──DiT──► denoised ── ... ──► t[steps]=0

The model call and guidance stay with the caller; these functions only do the arithmetic.
"""

from __future__ import annotations

import math

import torch

from ..errors import InvalidParameter

LOGSNR_START = -6.0  # log-SNR of the first level when starting from pure noise (t ≈ 0.9975)
LOGSNR_END = 2.0  # log-SNR of the last noisy level (t ≈ 0.12) before the final jump to 0


def pingpong_sigmas(steps: int, start: float = 1.0) -> torch.Tensor:
    """Noise levels [steps + 1], float32, from `start` down to 0.

    Evenly spaced in log-SNR = log((1 - t) / t) from that of `start` (-6 for pure noise) to 2,
    then t = sigmoid(-logSNR); the ends are set to `start` and 0 exactly. A `start` below 1
    is the init-audio strength: the latents begin as init * (1 - start) + noise * start.
    """
    if steps < 1:
        raise InvalidParameter(f"steps must be at least 1, got {steps}")
    if not 0.0 <= start <= 1.0:
        raise InvalidParameter(f"the starting noise level must be between 0 and 1, got {start}")
    if start == 0.0:  # nothing to denoise: every step keeps the init latents as they are
        return torch.zeros(steps + 1)
    # why the 1e-6: stable-audio-tools adds it inside the log, so a start near 1 stays finite
    logsnr_start = math.log((1 - start) / start + 1e-6) if start < 1.0 else LOGSNR_START
    t = torch.sigmoid(-torch.linspace(logsnr_start, LOGSNR_END, steps + 1))
    t[0] = start
    t[-1] = 0.0
    return t


def init_latents(init: torch.Tensor | None, noise: torch.Tensor, strength: float) -> torch.Tensor:
    """The latents the sampler starts from: noise alone, or init audio latents noised to `strength`."""
    if init is None:
        return noise
    return init * (1 - strength) + noise * strength


def pingpong_step(x: torch.Tensor, v: torch.Tensor, t: float | torch.Tensor, t_next: float | torch.Tensor,
                  noise: torch.Tensor) -> torch.Tensor:
    """One step: the clean estimate from the velocity `v` at level t, re-noised to t_next.

    x, v, noise: [B, C, T] latents; at t_next = 0 the result is the clean estimate itself.
    """
    denoised = x - t * v
    return (1 - t_next) * denoised + t_next * noise
