"""Where one CPU decode step's time goes: the whole step, then with the kernels' products and
attention replaced by empty outputs (the differences are their share).

    python -m benchmarks.step --size small --position 250 --variants default,int8

One prompt with guidance (2 rows), the step at a given cache position, random weights.
"""

from __future__ import annotations

import argparse
import time

import torch

from .common import checkpoint_for, hardware, report


def time_step(lm, params, position: int, steps: int) -> float:
    """Milliseconds per decode_step at `position` (its cache already set up)."""
    from tunesmith.engine.generate import decode_step

    codes = torch.zeros((1, lm.cfg.n_codebooks, 1), dtype=torch.long)
    seeds, pos = torch.tensor([1]), torch.tensor([position])
    for _ in range(3):
        decode_step(lm, codes, pos, params, seeds, pos[0], position + 1)
    start = time.perf_counter()
    for _ in range(steps):
        decode_step(lm, codes, pos, params, seeds, pos[0], position + 1)
    return (time.perf_counter() - start) / steps * 1e3


@torch.inference_mode()
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=["small", "medium", "large"])
    parser.add_argument("--position", type=int, default=250)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--variants", default="default,int8")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)

    from tunesmith import MusicGen
    from tunesmith.engine import cpu_kernels
    from tunesmith.engine.conditioning import with_null_condition
    from tunesmith.engine.sampling import SamplingParams

    if cpu_kernels.library() is None:
        raise SystemExit("the CPU kernels are not available here: nothing to break down")
    real_gemv, real_attend = cpu_kernels.gemv, cpu_kernels.attend_one

    def empty_gemv(kernels, x, packed, scale):
        return torch.empty((*x.shape[:-1], packed.shape[1] * packed.shape[3]), dtype=x.dtype)

    rows = []
    for variant in args.variants.split(","):
        mg = MusicGen.from_pretrained(checkpoint_for(args.size), device="cpu",
                                      **({"quantize": variant} if variant != "default" else {}))
        lm = mg._model.lm
        lm.set_condition(*with_null_condition(*mg._model.text.encode(["calm lofi piano"])))
        lm.setup_cache(batch=2, max_len=args.position + 2)
        params = SamplingParams()
        try:
            whole = time_step(lm, params, args.position, args.steps)
            cpu_kernels.gemv = empty_gemv
            no_products = time_step(lm, params, args.position, args.steps)
            cpu_kernels.attend_one = lambda kernels, q, k, v, bias: torch.empty_like(q)
            rest = time_step(lm, params, args.position, args.steps)
        finally:
            cpu_kernels.gemv, cpu_kernels.attend_one = real_gemv, real_attend
        rows.append(f"| {variant} ({str(mg.dtype)[6:]}) | {whole - no_products:.1f} | {no_products - rest:.1f} "
                    f"| {rest:.1f} | {whole:.1f} |")
        del mg, lm

    table = "\n".join([
        f"### One decode step, musicgen-{args.size}, cache position {args.position} (ms)", "",
        f"Hardware: {hardware()}. Command: `python -m benchmarks.step --size {args.size} --position "
        f"{args.position} --variants {args.variants}`.", "",
        "| variant | matrix-vector products | attention | everything else | whole step |",
        "| --- | ---: | ---: | ---: | ---: |", *rows, ""])
    report(table, args.markdown)


if __name__ == "__main__":
    main()
