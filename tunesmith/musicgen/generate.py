"""The decode loop: set the condition, prefill any known codes, then one step per codec frame.

The sequence holds the delayed layout behind a BOS column. Entries to generate are marked in
`free`; every other entry (the pattern's pads, the codes of an audio prompt) is written before the
loop and kept. Three ways to run the same step, chosen by device:
- eager (CPU, MPS): attention reads only the filled part of the cache;
- static: fixed shapes, everything on device tensors (the step reads its position from a tensor);
- graph (CUDA): the static step captured once in a CUDA graph and replayed, no host sync per step.
"""

from __future__ import annotations

from typing import Callable

import torch

from .conditioning import with_null_condition
from .lm import MusicGenLM
from .patterns import apply_delay, delay_mask, delay_offsets, revert_delay
from .sampling import SamplingParams, guidance_mix, sample

Progress = Callable[[int, int], None]
TEXT_BUCKET = 32  # on CUDA, text lengths round up to this so that captured graphs are reused


def decode_step(lm: MusicGenLM, codes: torch.Tensor, pos: torch.Tensor, params: SamplingParams,
                seeds: torch.Tensor, noise_step: torch.Tensor, kv_len: int | None = None,
                prefill: bool = False) -> torch.Tensor:
    """codes [B, K, T] at positions pos [T] -> codes of the next position [B, K]. Fixed shapes, no
    data-dependent branches. noise_step [] picks the sampling noise (a position in the whole piece)."""
    if params.rows > 1:
        codes = codes.repeat(params.rows, 1, 1)  # conditional rows, (style-only rows,) unconditional rows
    logits = lm(codes, pos, kv_len, with_prefix=prefill)[:, :, -1]  # [rows * B, K, V]
    if params.rows > 1:
        logits = guidance_mix(logits, params.cfg, params.cfg_beta)  # [B, K, V]
    return sample(logits, params, seeds, noise_step)


def static_step(lm: MusicGenLM, seq: torch.Tensor, free: torch.Tensor, pos: torch.Tensor,
                params: SamplingParams, seeds: torch.Tensor, noise_base: torch.Tensor) -> None:
    """seq [B, K, L + 1]: read position pos, fill the free entries of pos + 1, advance pos. Device tensors only."""
    nxt = decode_step(lm, seq.index_select(2, pos), pos, params, seeds, noise_base + pos[0])  # [B, K]
    target = pos + 1
    keep = seq.index_select(2, target)  # [B, K, 1]
    seq.index_copy_(2, target, torch.where(free.index_select(1, pos), nxt[:, :, None], keep))
    pos.add_(1)


class StepGraph:
    """The static step captured in a CUDA graph, with the buffers it reads and writes.

    Off CUDA nothing is captured and each replay runs the step eagerly: the same bookkeeping, testable
    on any machine.
    """

    def __init__(self, lm: MusicGenLM, seq, free, seeds, params: SamplingParams, start: int):
        self.seq, self.free, self.seeds = seq.clone(), free.clone(), seeds.clone()
        self.pos = torch.full((1,), start, dtype=torch.long, device=seq.device)
        self.noise_base = torch.zeros((), dtype=torch.long, device=seq.device)
        self.step = lambda: static_step(lm, self.seq, self.free, self.pos, params, self.seeds, self.noise_base)
        self.graph = None
        if seq.device.type != "cuda":
            return
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside the graph, as capture requires; it writes only
            for _ in range(3):  # cache positions from `start` on, which every run writes again
                self.step()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.step()

    def run(self, seq, free, seeds, start: int, noise_base: int, progress: Progress | None, done: int, total: int):
        self.seq.copy_(seq)
        self.free.copy_(free)
        self.seeds.copy_(seeds)
        self.pos.fill_(start)
        self.noise_base.fill_(noise_base)
        for t in range(seq.shape[2] - 1 - start):
            self.graph.replay() if self.graph is not None else self.step()
            if progress is not None:
                progress(done + t + 1, total)
        return self.seq


def null_chroma(batch: int, frames: int, dim: int, device) -> torch.Tensor:
    """The reference's unconditional melody: every frame one-hot on the first chroma bin."""
    null = torch.zeros((batch, frames, dim), device=device)
    null[:, :, 0] = 1
    return null


def _bucket_text(states: torch.Tensor, mask: torch.Tensor):
    pad = -states.shape[1] % TEXT_BUCKET
    return torch.nn.functional.pad(states, (0, 0, 0, pad)), torch.nn.functional.pad(mask, (0, pad))


def layout(n_frames: int, prefix: torch.Tensor, offsets: list[int], pad: int):
    """prefix [B, K, P] known codes -> (seq [B, K, L + 1] with BOS and known entries, free [K, L], P)."""
    B, K, P = prefix.shape
    codes = torch.full((B, K, n_frames), pad, dtype=torch.long, device=prefix.device)
    codes[:, :, :P] = prefix
    delayed = apply_delay(codes, offsets, pad)  # [B, K, L]
    seq = torch.cat([torch.full_like(delayed[:, :, :1], pad), delayed], dim=2)
    valid = delay_mask(n_frames, offsets, prefix.device)
    known = torch.zeros_like(valid)
    if P:
        known[:, : P + max(offsets)] = delay_mask(P, offsets, prefix.device)
    return seq, valid & ~known, P


def steps_for(n_frames: int, prefix_frames: int, offsets: list[int]) -> int:
    """Decode steps (the prefill counts as one) that generate n_frames after a prefix of prefix_frames."""
    return n_frames + max(offsets) - prefix_frames


@torch.inference_mode()
def generate_codes(lm: MusicGenLM, text_states: torch.Tensor, text_mask: torch.Tensor, n_frames: int,
                   params: SamplingParams, seeds: torch.Tensor, progress: Progress | None = None,
                   mode: str = "auto", prefix: torch.Tensor | None = None, noise_base: int = 0,
                   progress_done: int = 0, progress_total: int | None = None,
                   chroma: torch.Tensor | None = None, style: torch.Tensor | None = None) -> torch.Tensor:
    """Text condition [B, S, text_dim] / [B, S] -> codes [B, K, n_frames], the first P of them the
    given prefix [B, K, P] (an audio prompt, or the context of a long piece).

    mode: "eager", "static" or "graph"; "auto" takes graph on CUDA, eager elsewhere.
    noise_base: where this call sits in a longer piece, so that each window draws its own noise.
    progress_done / progress_total: report within a larger job (long form).
    chroma: melody models' chroma [B, F, 12] (one-hot); None gives the reference's null melody.
    style: style models' tokens [B, T, dim]; None gives the null style (one zero token). With
    params.cfg_beta the rows are text+style, style only (null text), neither (null text and style).
    """
    cfg = lm.cfg
    B, device = text_states.shape[0], seeds.device
    if mode == "auto":
        mode = "graph" if device.type == "cuda" else "eager"
    offsets = delay_offsets(cfg.n_codebooks, cfg.audio_channels)
    if prefix is None:
        prefix = torch.zeros((B, cfg.n_codebooks, 0), dtype=torch.long, device=device)
    seq, free, first = layout(n_frames, prefix.to(device), offsets, cfg.pad_token)
    length = seq.shape[2] - 1
    total = progress_total or steps_for(n_frames, first, offsets)
    if mode == "graph" and not cfg.prefix:  # prefixes attend to padding: no bucketing there
        text_states, text_mask = _bucket_text(text_states, text_mask)  # padding is masked: same result
    nulls = params.rows - 1
    if cfg.melody:
        null = null_chroma(B, 1 if chroma is None else chroma.shape[1], cfg.chroma_dim, device)
        chroma = null if chroma is None else chroma.to(device)
        chroma = torch.cat([chroma] + [null] * nulls)
    if cfg.style:
        style = torch.zeros((B, 1, cfg.dim), device=device) if style is None else style.to(device)  # [B, T, dim]
        null = torch.zeros_like(style)  # the reference zeroes a dropped style after its projection
        style = torch.cat([style] * nulls + [null]) if nulls else style  # [rows * B, T, dim]
    text_states, text_mask = with_null_condition(text_states, text_mask, nulls)
    lm.set_condition(text_states, text_mask, chroma, style)
    lm.setup_cache(batch=text_states.shape[0], max_len=length + 1)

    def report(done):
        if progress is not None:
            progress(progress_done + done, total)

    # Prefill: BOS and the known columns in one forward, predicting the first free column.
    positions = torch.arange(length + 1, device=device)
    nxt = decode_step(lm, seq[:, :, : first + 1], positions[: first + 1], params, seeds,
                      positions[first] + noise_base, first + 1 if mode == "eager" else None, prefill=True)
    seq[:, :, first + 1] = torch.where(free[:, first], nxt, seq[:, :, first + 1])
    report(1)

    if mode == "graph":
        key = (B, length, text_states.shape[1], params)
        if key not in lm.step_graphs:
            lm.step_graphs[key] = StepGraph(lm, seq, free, seeds, params, first + 1)
        seq = lm.step_graphs[key].run(seq, free, seeds, first + 1, noise_base, progress, progress_done + 1, total)
    elif mode == "static":
        pos = torch.tensor([first + 1], device=device)
        base = torch.tensor(noise_base, device=device)
        for t in range(first + 1, length):
            static_step(lm, seq, free, pos, params, seeds, base)
            report(t - first + 1)
    else:
        for t in range(first + 1, length):
            nxt = decode_step(lm, seq[:, :, t : t + 1], positions[t : t + 1], params, seeds,
                              positions[t] + noise_base, t + 1)  # [B, K]
            seq[:, :, t + 1] = torch.where(free[:, t], nxt, seq[:, :, t + 1])
            report(t - first + 1)
    return revert_delay(seq[:, :, 1:], offsets, n_frames).clone()
