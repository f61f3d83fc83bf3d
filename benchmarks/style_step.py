"""One CPU decode step of a prefix-conditioned decoder: the melody model's two rows against
MusicGen-Style's three (issue 14).

    python -m benchmarks.style_step --size medium --position 250 --variants default,int8

Both decoders are musicgen-medium's by default (1.5B, no cross-attention), with random weights built
in memory (no checkpoint; speed does not depend on the values), set up as a generation sets them up:
the melody model's prefix [235 chroma frames | text], rows cond / uncond; the style model's prefix
[15 style tokens (a 3 s excerpt) | text], rows text+style / style only / neither (cfg_beta), and also
two rows (style alone or text alone: ordinary guidance), which isolates what the third row costs.
Each case runs decode_step (the whole-step kernel on CPUs with AVX512-BF16) at audio position 0 and
--position, the prefix ahead of both. Cases and variants are interleaved (--rounds rounds of --steps
steps each, medians reported), so every variant's two decoders are held at once: 11.5 GB resident for
medium in bfloat16 and int8. Only the decoder step is timed (MERT, T5 and EnCodec run once a clip).
"""

from __future__ import annotations

import argparse
import functools
import statistics

import torch

from .common import hardware, random_decoder, report
from .step import time_ms

TEXT_DIM = 768  # T5-base's width, both models' text encoder
TEXT_TOKENS = 12  # a short prompt
STYLE_TOKENS = 15  # a 3 s excerpt: 225 MERT frames at 75 Hz, every 15th
FRAME_RATE = 50  # decode steps per generated second (EnCodec 32 kHz)
TINY = {"dim": 32, "n_layers": 2, "n_heads": 4, "ffn_dim": 64}  # checks that the benchmark runs, not speed
CASES = (("melody", 2), ("style", 2), ("style", 3))


def decoder_config(size: str, model: str):
    """The melody or style checkpoint's decoder at `size`, as their loaders build it."""
    from tests.checkpoints import DECODER_PRESETS
    from tunesmith.musicgen.audiocraft import MAX_POSITIONS
    from tunesmith.musicgen.config import DecoderConfig

    preset = TINY if size == "tiny" else DECODER_PRESETS[size]
    if model == "melody":
        return DecoderConfig(**preset, text_dim=TEXT_DIM, melody=True)
    return DecoderConfig(**preset, text_dim=TEXT_DIM, max_positions=MAX_POSITIONS, style=True)


def set_up(lm, rows: int, position: int):
    """One prompt's condition in `rows` guidance rows (generate_codes' order) and a cache reaching position."""
    from tunesmith.musicgen.conditioning import with_null_condition
    from tunesmith.musicgen.generate import null_chroma

    nulls = rows - 1
    text = with_null_condition(torch.randn(1, TEXT_TOKENS, TEXT_DIM), torch.ones(1, TEXT_TOKENS, dtype=torch.long),
                               nulls)  # [rows, S, text_dim], [rows, S]
    if lm.cfg.melody:
        lm.set_condition(*text, chroma=null_chroma(rows, lm.cfg.chroma_length, lm.cfg.chroma_dim, "cpu"))
    else:
        style = torch.randn(1, STYLE_TOKENS, lm.cfg.dim)
        lm.set_condition(*text, style=torch.cat([style] * nulls + [torch.zeros_like(style)]))  # [rows, T, dim]
    lm.setup_cache(batch=rows, max_len=position + 2)


@torch.inference_mode()
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="medium", choices=["tiny", "small", "medium", "large"])
    parser.add_argument("--position", type=int, default=250)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per case and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", default="default,int8")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)

    from tunesmith.musicgen import cpu_step
    from tunesmith.musicgen.generate import decode_step
    from tunesmith.musicgen.sampling import SamplingParams
    from tunesmith.request import CFG_BETA

    variants = args.variants.split(",")
    lms = {(v, model): random_decoder(decoder_config(args.size, model), quantize=None if v == "default" else v)
           for v in variants for model in ("melody", "style")}
    params = {2: SamplingParams(), 3: SamplingParams(cfg_beta=CFG_BETA)}
    seeds, positions = torch.tensor([1]), (0, args.position)
    times = {(v, case, p): [] for v in variants for case in CASES for p in positions}
    kernel = {}
    for _ in range(args.rounds):
        for v in variants:
            for model, rows in CASES:
                lm = lms[v, model]
                set_up(lm, rows, args.position)
                codes = torch.zeros((1, lm.cfg.n_codebooks, 1), dtype=torch.long)  # [B, K, 1]
                for p in positions:
                    pos = torch.tensor([p])
                    step = functools.partial(decode_step, lm, codes, pos, params[rows], seeds, pos[0], p + 1)
                    times[v, (model, rows), p].append(time_ms(step, args.steps))
                kernel[v] = kernel.get(v, True) and isinstance(lm.whole_step[1], cpu_step.CPUStep)

    table_rows = []
    for v in variants:
        label = f"{v} (bfloat16{'' if kernel[v] else '; torch layers: no whole-step kernel here'})"
        for p in positions:
            melody, style2, style3 = (statistics.median(times[v, case, p]) for case in CASES)
            table_rows.append(
                f"| {label} | {p} | {melody:.1f} | {style2:.1f} | {style3:.1f} | {style3 / melody:.2f} "
                f"| {style3 / style2:.2f} | {melody * FRAME_RATE / 1e3:.2f} | {style3 * FRAME_RATE / 1e3:.2f} |")
    prefix = {model: lms[variants[0], model].offset for model in ("melody", "style")}
    table = "\n".join([
        f"### One decode step, musicgen-{args.size} decoder: melody (2 rows) against style (3 rows), ms per step", "",
        (f"Hardware: {hardware()}. Command: `python -m benchmarks.style_step --size {args.size} --position "
         f"{args.position} --steps {args.steps} --rounds {args.rounds} --variants {args.variants}`. Median of "
         f"{args.rounds} interleaved rounds of {args.steps} steps, random weights, one prompt; prefix ahead of "
         f"the audio position: melody {prefix['melody']} (chroma and text), style {prefix['style']} (style "
         f"tokens and text)."), "",
        ("| variant | audio position | melody, 2 rows | style, 2 rows | style, 3 rows | style 3 rows / melody 2 rows "
         "| style 3 rows / 2 rows | melody, s per generated s | style 3 rows, s per generated s |"),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", *table_rows, ""])
    report(table, args.markdown)


if __name__ == "__main__":
    main()
