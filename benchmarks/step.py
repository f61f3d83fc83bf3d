"""Where one CPU decode step's time goes, on the whole-step kernel (tunesmith/musicgen/cpu_step.py).

    python -m benchmarks.step --size small --position 250 --variants default,int8

One prompt with guidance (2 rows), random weights. For each variant: the step at cache position 0
(the products, with next to no attention) and at --position; the decoder's forward alone at that
position (the rest of the step is the guidance mix, sampling and the Python around them); and the
same step through the torch layers, one operation at a time, for comparison.
"""

from __future__ import annotations

import argparse
import time

import torch

from .common import checkpoint_for, hardware, report


def time_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


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
    from tunesmith.musicgen import cpu_step
    from tunesmith.musicgen.conditioning import with_null_condition
    from tunesmith.musicgen.generate import decode_step
    from tunesmith.musicgen.sampling import SamplingParams

    params, seeds = SamplingParams(), torch.tensor([1])
    rows = []
    for variant in args.variants.split(","):
        mg = MusicGen.from_pretrained(checkpoint_for(args.size), device="cpu",
                                      **({"quantize": variant} if variant != "default" else {}))
        lm = mg._model.lm
        lm.set_condition(*with_null_condition(*mg._model.text.encode(["calm lofi piano"])))
        lm.setup_cache(batch=2, max_len=args.position + 2)
        codes = torch.zeros((1, lm.cfg.n_codebooks, 1), dtype=torch.long)

        def step(p):
            pos = torch.tensor([p])
            return lambda: decode_step(lm, codes, pos, params, seeds, pos[0], p + 1)

        P = args.position
        at_start, at_p = time_ms(step(0), args.steps), time_ms(step(P), args.steps)
        forward = time_ms(lambda: lm(torch.cat([codes, codes]), torch.tensor([P]), P + 1), args.steps)
        if not isinstance(lm.whole_step[1], cpu_step.CPUStep):
            raise SystemExit(f"{variant}: the whole-step kernel does not apply here (no AVX512-BF16, or int4)")
        real_build = cpu_step.build
        cpu_step.build, lm.whole_step = (lambda lm, rows: None), None
        try:
            layers = time_ms(step(P), args.steps)
        finally:
            cpu_step.build, lm.whole_step = real_build, None
        rows.append(f"| {variant} ({str(mg.dtype)[6:]}) | {at_start:.1f} | {at_p:.1f} | {forward:.1f} "
                    f"| {at_p - forward:.1f} | {layers:.1f} |")
        mg = lm = None  # freed before the next variant loads

    table = "\n".join([
        f"### One decode step, musicgen-{args.size} (ms)", "",
        f"Hardware: {hardware()}. Command: `python -m benchmarks.step --size {args.size} --position "
        f"{args.position} --variants {args.variants}`.", "",
        f"| variant | step at position 0 | step at {args.position} | decoder forward at {args.position} "
        f"| guidance, sampling, Python | step through the torch layers at {args.position} |",
        "| --- | ---: | ---: | ---: | ---: | ---: |", *rows, ""])
    report(table, args.markdown)


if __name__ == "__main__":
    main()
