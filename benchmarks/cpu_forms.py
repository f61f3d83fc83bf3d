"""One CPU decode step of MusicGen's decoder in each form its step linears can take, side by side: what to
pick on a CPU without the whole-step kernel (no AVX-512: benchmarks/step.py covers the kernel).

    python -m benchmarks.cpu_forms --size small --threads 2 --rounds 7
    python -m benchmarks.cpu_forms --size medium --variants float32,float32+int8d --rounds 5

A variant is DTYPE or DTYPE+FORM: DTYPE the decoder's dtype (float32, bfloat16); no FORM: the linears as the
loader makes them for that dtype (oneDNN-packed where oneDNN packs it, else plain); FORM "int8" and "int4" as
the loader makes them with quantize= (int8: through fbgemm below AVX-512, the heads in the model's dtype), "int8w"
torch's weight-only int8 product (Int8Linear: int8 on these CPUs before fbgemm), "int8d" fbgemm's dynamic int8
(DynamicInt8Linear) for every step linear, the heads too.

Random weights built in memory (no checkpoint; speed does not depend on the values), each step linear made
straight into its form, so a variant holds only its own bytes. One prompt with guidance (2 rows), decode_step
(guidance mix and sampling included) at cache position 0 and --position. Variants are interleaved: --rounds
rounds of --steps steps each, medians reported, so drift of a shared machine falls on every variant alike.
The memory bandwidth row (one pass over a 512 MB float32 tensor, same threads) is the floor's yardstick:
a step reads every linear's weight once.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
from torch import nn

from .common import hardware, report
from .step import time_ms

TEXT_DIM = 768  # T5-base's width
TEXT_TOKENS = 12  # a short prompt
FRAME_RATE = 50  # decode steps per generated second
TINY = {"dim": 32, "n_layers": 2, "n_heads": 4, "ffn_dim": 64}  # checks that the benchmark runs, not speed
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def decoder_config(size: str):
    from tests.checkpoints import DECODER_PRESETS
    from tunesmith.musicgen.config import DecoderConfig

    return DecoderConfig(**(TINY if size == "tiny" else DECODER_PRESETS[size]), text_dim=TEXT_DIM)


def maker(lm: nn.Module, form: str | None):
    """(linear, its path in the LM) -> the module `form` makes of it (the nn.Linear itself where it stays plain)."""
    from tunesmith.musicgen import cpu_kernels
    from tunesmith.musicgen.linear import DynamicInt8Linear, Int8Linear, specialiser

    if form == "int8w":
        kernels = cpu_kernels.library()
        return lambda linear, name: Int8Linear(linear, linear.weight.dtype, kernels)
    if form == "int8d":
        return lambda linear, name: DynamicInt8Linear(linear)
    if form not in (None, "int8", "int4"):
        raise SystemExit(f"unknown form {form!r}: int8, int8w, int8d or int4")
    return specialiser(lm, torch.device("cpu"), form) or (lambda linear, name: linear)


def weight_bytes(module: nn.Module, out_features: int, in_features: int) -> int:
    """Bytes of weight one product reads (scales and zero points included)."""
    from tunesmith.musicgen.linear import DynamicInt8Linear, Int4Linear, Int8Linear

    if isinstance(module, DynamicInt8Linear):
        return module.product.nbytes
    if isinstance(module, Int8Linear):
        return out_features * in_features + module.scales.numel() * module.scales.element_size()
    if isinstance(module, Int4Linear) and module.kernels is not None:  # packed with its scales and minimums
        return module.weight.numel()
    if isinstance(module, Int4Linear):
        return out_features * in_features // 2 + module.scales_zeros.numel() * module.scales_zeros.element_size()
    return out_features * in_features * module.weight.dtype.itemsize


@torch.no_grad()
def build(cfg, dtype: torch.dtype, form: str | None, seed: int = 0) -> tuple[nn.Module, int]:
    """A MusicGenLM with random weights (matrices N(0, 0.02), norms 1, biases 0) in `dtype`, each step linear
    made into `form` as soon as it is drawn -> (lm, bytes of the step linears' weights)."""
    from tunesmith.musicgen.linear import step_linears
    from tunesmith.musicgen.lm import MusicGenLM, sinusoidal_positions

    with torch.device("meta"):
        lm = MusicGenLM(cfg).to(dtype)
    generator = torch.Generator().manual_seed(seed)
    make, nbytes = maker(lm, form), 0
    paths = {id(module): path for path, module in lm.named_modules()}
    for parent, name in step_linears(lm):
        old = getattr(parent, name)
        linear = nn.Linear(old.in_features, old.out_features, bias=False, device="meta")
        linear.weight = nn.Parameter(torch.empty(old.weight.shape).normal_(0, 0.02, generator=generator).to(dtype),
                                     requires_grad=False)
        made = make(linear, f"{paths[id(parent)]}.{name}".lstrip("."))
        nbytes += weight_bytes(made, old.out_features, old.in_features)
        setattr(parent, name, made)
    for module in lm.modules():  # the rest (embeddings, norms, cross-attention's kv, text projection)
        for name, p in list(module.named_parameters(recurse=False)):
            if p.is_meta:
                value = torch.empty(p.shape, dtype=p.dtype)
                value.normal_(0, 0.02, generator=generator) if p.dim() > 1 else value.fill_(float(name == "weight"))
                setattr(module, name, nn.Parameter(value, requires_grad=False))
    lm.positions = sinusoidal_positions(cfg.max_positions, cfg.dim).to(dtype)
    return lm.eval(), nbytes


def read_bandwidth(repeats: int = 5) -> float:
    """GB/s of one pass summing a 512 MB float32 tensor (best of `repeats`), on torch's threads."""
    x = torch.ones(128 * 2**20)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - start)
    return x.numel() * 4 / best / 1e9


@torch.inference_mode()
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=["tiny", "small", "medium", "large"])
    parser.add_argument("--position", type=int, default=250)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant, position and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads, held fixed (default: torch's own count)")
    parser.add_argument("--variants", default="float32,bfloat16,float32+int8,float32+int8w,bfloat16+int8w,"
                                              "float32+int8d,float32+int4")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)

    from tunesmith.generation import pin_threads
    from tunesmith.musicgen.conditioning import with_null_condition
    from tunesmith.musicgen.generate import decode_step
    from tunesmith.musicgen.sampling import SamplingParams

    if args.threads:
        pin_threads(args.threads)  # no per-call back-off: every variant on the same threads
    cfg = decoder_config(args.size)
    variants = args.variants.split(",")
    built = {}
    for v in variants:
        dtype, _, form = v.partition("+")
        if dtype not in DTYPES:
            raise SystemExit(f"unknown dtype {dtype!r} in {v!r}: float32 or bfloat16")
        built[v] = build(cfg, DTYPES[dtype], form or None)
    text = with_null_condition(torch.randn(1, TEXT_TOKENS, TEXT_DIM), torch.ones(1, TEXT_TOKENS, dtype=torch.long))
    params, seeds, positions = SamplingParams(), torch.tensor([1]), (0, args.position)
    codes = torch.zeros((1, cfg.n_codebooks, 1), dtype=torch.long)  # [B, K, 1]
    times = {(v, p): [] for v in variants for p in positions}
    bandwidth = []
    for _ in range(args.rounds):
        bandwidth.append(read_bandwidth())
        for v in variants:
            lm = built[v][0]
            lm.set_condition(*text)
            lm.setup_cache(batch=2, max_len=args.position + 2)
            for p in positions:
                pos = torch.tensor([p])
                step = functools.partial(decode_step, lm, codes, pos, params, seeds, pos[0], p + 1)
                times[v, p].append(time_ms(step, args.steps))

    gbs = statistics.median(bandwidth)
    rows = []
    for v in variants:
        lm, nbytes = built[v]
        at_0, at_p = (statistics.median(times[v, p]) for p in positions)
        form = type(lm.layers[0].fc1).__name__
        rows.append(f"| {v} | {form} | {nbytes / 1e6:.1f} | {at_0:.1f} | {at_p:.1f} | {nbytes / at_0 / 1e6:.1f} "
                    f"| {nbytes / gbs / 1e6:.1f} | {1e3 / FRAME_RATE / at_p:.2f}x |")
    table = "\n".join([
        f"### One decode step per form of the step linears, musicgen-{args.size} decoder, ms per step", "",
        (f"Hardware: {hardware()}. Command: `python -m benchmarks.cpu_forms --size {args.size} --position "
         f"{args.position} --steps {args.steps} --rounds {args.rounds} --threads {torch.get_num_threads()} --variants "
         f"{args.variants}`. Median of {args.rounds} interleaved rounds of {args.steps} steps, random weights, one "
         f"prompt with guidance (2 rows). Memory read bandwidth (a 512 MB float32 sum, same threads): "
         f"{gbs:.1f} GB/s (median of the rounds, {min(bandwidth):.1f}-{max(bandwidth):.1f})."), "",
        (f"| variant | step linears | their weights (MB read per step) | step at 0 | step at {args.position} "
         f"| weights read at 0 (GB/s) | bandwidth floor (ms) | decoder alone at {args.position}, x real time |"),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |", *rows, ""])
    report(table, args.markdown)


if __name__ == "__main__":
    main()
