"""The decode loop: set the condition, then one step per codec frame (plus the pattern's delay).

Three ways to run the same step, chosen by device:
- eager (CPU, MPS): attention reads only the filled part of the cache;
- static: fixed shapes, everything on device tensors (the step reads its position from a tensor);
- graph (CUDA): the static step captured once in a CUDA graph and replayed, no host sync per step.
"""

from __future__ import annotations

from typing import Callable

import torch

from .conditioning import with_null_condition
from .lm import MusicGenLM
from .patterns import delay_mask, delay_offsets, revert_delay
from .sampling import SamplingParams, guidance_mix, sample

Progress = Callable[[int, int], None]
TEXT_BUCKET = 32  # on CUDA, text lengths round up to this so that captured graphs are reused


def decode_step(lm: MusicGenLM, codes: torch.Tensor, pos: torch.Tensor, params: SamplingParams,
                seeds: torch.Tensor, kv_len: int | None = None) -> torch.Tensor:
    """codes [B, K] at position pos [1] -> next codes [B, K]. Fixed shapes, no data-dependent branches."""
    if params.cfg > 1:
        codes = torch.cat([codes, codes])  # conditional rows, then unconditional
    logits = lm(codes[:, :, None], pos, kv_len)[:, :, -1]  # [B2, K, V]
    if params.cfg > 1:
        logits = guidance_mix(logits, params.cfg)  # [B, K, V]
    return sample(logits, params, seeds, pos[0])


def static_step(lm: MusicGenLM, seq: torch.Tensor, valid: torch.Tensor, pos: torch.Tensor,
                params: SamplingParams, seeds: torch.Tensor) -> None:
    """seq [B, K, steps + 1]: read position pos, write pos + 1, advance pos. Device tensors only."""
    codes = seq.index_select(2, pos).squeeze(2)  # [B, K]
    nxt = decode_step(lm, codes, pos, params, seeds)  # whole static cache, causal mask
    keep = valid.index_select(1, pos)  # [K, 1]
    seq.index_copy_(2, pos + 1, torch.where(keep, nxt[:, :, None], lm.cfg.pad_token))
    pos.add_(1)


class StepGraph:
    """The static step captured in a CUDA graph, with the buffers it reads and writes."""

    def __init__(self, lm: MusicGenLM, seq, valid, seeds, params: SamplingParams):
        self.seq, self.valid, self.seeds = seq, valid, seeds
        self.pos = torch.zeros(1, dtype=torch.long, device=seq.device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside the graph, as capture requires
            for _ in range(3):
                static_step(lm, seq, valid, self.pos, params, seeds)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            static_step(lm, seq, valid, self.pos, params, seeds)

    def run(self, seeds: torch.Tensor, pad: int, steps: int, progress: Progress | None):
        self.seq.fill_(pad)
        self.seeds.copy_(seeds)
        self.pos.zero_()
        for t in range(steps):
            self.graph.replay()
            if progress is not None:
                progress(t + 1, steps)
        return self.seq


def _bucket_text(states: torch.Tensor, mask: torch.Tensor):
    pad = -states.shape[1] % TEXT_BUCKET
    return torch.nn.functional.pad(states, (0, 0, 0, pad)), torch.nn.functional.pad(mask, (0, pad))


@torch.inference_mode()
def generate_codes(lm: MusicGenLM, text_states: torch.Tensor, text_mask: torch.Tensor, n_frames: int,
                   params: SamplingParams, seeds: torch.Tensor, progress: Progress | None = None,
                   mode: str = "auto") -> torch.Tensor:
    """Text condition [B, S, text_dim] / [B, S] -> codes [B, K, n_frames].

    mode: "eager", "static" or "graph"; "auto" takes graph on CUDA, eager elsewhere.
    """
    cfg = lm.cfg
    B, device = text_states.shape[0], seeds.device
    if mode == "auto":
        mode = "graph" if device.type == "cuda" else "eager"
    offsets = delay_offsets(cfg.n_codebooks, cfg.audio_channels)
    steps = n_frames + max(offsets)
    if mode == "graph":
        text_states, text_mask = _bucket_text(text_states, text_mask)  # padding is masked: same result
    if params.cfg > 1:
        text_states, text_mask = with_null_condition(text_states, text_mask)
    lm.setup_cache(batch=text_states.shape[0], max_len=steps + 1)
    lm.set_condition(text_states, text_mask)
    valid = delay_mask(n_frames, offsets, device)  # [K, steps]

    if mode == "graph":
        key = (B, steps, text_states.shape[1], params)
        graphs = lm.step_graphs
        if key not in graphs:
            seq = torch.full((B, cfg.n_codebooks, steps + 1), cfg.pad_token, dtype=torch.long, device=device)
            graphs[key] = StepGraph(lm, seq, valid, seeds.clone(), params)
        seq = graphs[key].run(seeds, cfg.pad_token, steps, progress)
        return revert_delay(seq[:, :, 1:], offsets, n_frames).clone()

    seq = torch.full((B, cfg.n_codebooks, steps + 1), cfg.pad_token, dtype=torch.long, device=device)  # BOS at 0
    if mode == "static":
        pos = torch.zeros(1, dtype=torch.long, device=device)
        for t in range(steps):
            static_step(lm, seq, valid, pos, params, seeds)
            if progress is not None:
                progress(t + 1, steps)
    else:
        positions = torch.arange(steps + 1, device=device)
        for t in range(steps):
            nxt = decode_step(lm, seq[:, :, t], positions[t : t + 1], params, seeds, t + 1)  # [B, K]
            seq[:, :, t + 1] = torch.where(valid[:, t], nxt, cfg.pad_token)
            if progress is not None:
                progress(t + 1, steps)
    return revert_delay(seq[:, :, 1:], offsets, n_frames)
