"""Pieces longer than the model's window: window by window, each conditioned on its text and on the
last `context` frames already generated, keeping only the new frames.

Memory stays one window's cache plus the output codes, whatever the length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .generate import Progress, generate_codes, steps_for
from .lm import MusicGenLM
from .options import SamplingParams, Schedule
from .patterns import delay_offsets


@dataclass(frozen=True)
class Window:
    start: int  # first frame of the window in the piece (its context included)
    context: int  # frames of already known codes it starts from
    new: int  # frames it adds


def plan_windows(n_frames: int, prefix_frames: int, window: int, context: int) -> list[Window]:
    """Cut a piece of n_frames, of which prefix_frames are given, into windows of at most `window` frames."""
    if not 0 < context < window:
        raise ValueError("context must be shorter than the window")
    windows, done = [], prefix_frames
    while done < n_frames:
        ctx = min(done, context)
        new = min(window - ctx, n_frames - done)
        windows.append(Window(done - ctx, ctx, new))
        done += new
    return windows


def text_at(schedule: Schedule, seconds: float) -> str:
    """The text in force at `seconds`: the last entry starting at or before it."""
    text = schedule[0][1]
    for start, entry in schedule:
        if start <= seconds + 1e-9:
            text = entry
    return text


def window_chroma(chroma: torch.Tensor | None, start_seconds: float, rate: float, length: int,
                  batch: int) -> torch.Tensor | None:
    """chroma [F, 12] -> [batch, length, 12] from start_seconds on, looped past the melody's end."""
    if chroma is None:
        return None
    first = int(round(start_seconds * rate))
    index = (first + torch.arange(length, device=chroma.device)) % chroma.shape[0]
    return chroma[index].expand(batch, -1, -1)


@torch.inference_mode()
def generate_long(lm: MusicGenLM, encode: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]],
                  schedules: list[Schedule], n_frames: int, frame_rate: int, params: SamplingParams,
                  seeds: torch.Tensor, window: int, context: int, prefix: torch.Tensor | None = None,
                  progress: Progress | None = None, chroma: torch.Tensor | None = None,
                  chroma_rate: float = 0.0, style: torch.Tensor | None = None) -> torch.Tensor:
    """One schedule per batch row -> codes [B, K, n_frames] (the first frames are `prefix` [B, K, P]).

    chroma [F, 12] at chroma_rate frames a second (melody models): each window gets the chroma from its
    own start time on, looped when the melody is shorter.
    style [B, T, dim] (style models): the same style tokens condition every window.
    """
    cfg = lm.cfg
    B, device = len(schedules), seeds.device
    codes = torch.empty((B, cfg.n_codebooks, n_frames), dtype=torch.long, device=device)
    P = 0 if prefix is None else prefix.shape[-1]
    if P:
        codes[:, :, :P] = prefix
    offsets = delay_offsets(cfg.n_codebooks, cfg.audio_channels)
    windows = plan_windows(n_frames, P, window, context)
    steps = [steps_for(w.context + w.new, w.context, offsets) for w in windows]
    total, done = sum(steps), 0
    encoded: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]] = {}
    for w, w_steps in zip(windows, steps):
        texts = tuple(text_at(s, (w.start + w.context) / frame_rate) for s in schedules)
        if texts not in encoded:
            encoded[texts] = encode(list(texts))
        states, mask = encoded[texts]
        known = codes[:, :, w.start : w.start + w.context]
        out = generate_codes(lm, states, mask, w.context + w.new, params, seeds, progress, prefix=known,
                             noise_base=w.start, progress_done=done, progress_total=total,
                             chroma=window_chroma(chroma, w.start / frame_rate, chroma_rate, cfg.chroma_length, B),
                             style=style)
        codes[:, :, w.start + w.context : w.start + w.context + w.new] = out[:, :, w.context :]
        done += w_steps
    return codes
