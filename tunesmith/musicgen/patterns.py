"""The delay pattern: codebook k is shifted k steps right so that each step predicts
codebook k of frame f after codebooks < k of the same frame are known.

For 4 codebooks and 3 frames (a, b, c are frames; P is the pad token):

    step:        0  1  2  3  4  5
    codebook 0:  a  b  c  P  P  P
    codebook 1:  P  a  b  c  P  P
    codebook 2:  P  P  a  b  c  P
    codebook 3:  P  P  P  a  b  c

Stereo checkpoints interleave the channels (even codebooks left, odd right) and the two
codebooks of a level share one delay. All functions here are pure.
"""

from __future__ import annotations

import torch


def delay_offsets(n_codebooks: int, audio_channels: int = 1) -> list[int]:
    """Delay in steps of each codebook: [0, 1, 2, 3] mono, [0, 0, 1, 1, ...] stereo."""
    return [k // audio_channels for k in range(n_codebooks)]


def delay_mask(n_frames: int, offsets: list[int], device=None) -> torch.Tensor:
    """[K, n_frames + max(offsets)] bool: True where the delayed layout holds a real code."""
    steps = n_frames + max(offsets)
    t = torch.arange(steps, device=device)
    off = torch.tensor(offsets, device=device)[:, None]
    return (t >= off) & (t < off + n_frames)


def apply_delay(codes: torch.Tensor, offsets: list[int], pad: int) -> torch.Tensor:
    """codes [B, K, N] -> delayed [B, K, N + max(offsets)] with pad where nothing is known."""
    B, K, N = codes.shape
    delayed = codes.new_full((B, K, N + max(offsets)), pad)
    for k, off in enumerate(offsets):
        delayed[:, k, off : off + N] = codes[:, k]
    return delayed


def revert_delay(delayed: torch.Tensor, offsets: list[int], n_frames: int) -> torch.Tensor:
    """delayed [B, K, >= N + max(offsets)] -> codes [B, K, N], undoing apply_delay."""
    return torch.stack([delayed[:, k, off : off + n_frames] for k, off in enumerate(offsets)], dim=1)
