"""How far bfloat16 and int8 move the decoder's outputs from float32, on the same checkpoint.

    python -m benchmarks.fidelity --size small --frames 250

Teacher-forced: one token sequence (sampled by the float32 model) is fed to every variant, one
position at a time through the KV cache as in generation (so the decode step's own kernels are the
ones measured); at each step and codebook we compare the guided next-code distributions: top-1
agreement and the mean KL(float32 || variant). Random weights make flatter distributions than trained ones: read the
figures as the numeric cost of the format, not as a listening test.
"""

from __future__ import annotations

import argparse

import torch

from .common import SIZES, checkpoint_for, hardware, report

PROMPT = "calm lofi piano with vinyl crackle, 80 bpm"
# key -> (row name, dtype, quantize, weight-only int8 forced: int8 as before fbgemm on CPUs below AVX-512)
VARIANTS = {"bfloat16": ("bfloat16", "bfloat16", None, False), "int8": ("int8", None, "int8", False),
            "int8-float32": ("int8, float32 model", "float32", "int8", False),
            "int8-weight-only": ("int8 weight-only, float32 model", "float32", "int8", True),
            "int4": ("int4", None, "int4", False), "int4-float32": ("int4, float32 model", "float32", "int4", False)}


@torch.inference_mode()
def guided_log_probs(mg, sequence: torch.Tensor, cfg: float = 3.0) -> torch.Tensor:
    """sequence [1, K, T] (delayed layout, BOS first) -> log p [K, T, V] of the next code after each position."""
    from tunesmith.musicgen.conditioning import with_null_condition
    from tunesmith.musicgen.sampling import guidance_mix

    model = mg._model
    states, mask = with_null_condition(*model.text.encode([PROMPT]))
    T = sequence.shape[-1]
    model.lm.set_condition(states, mask)
    model.lm.setup_cache(batch=2, max_len=T)
    both = torch.cat([sequence, sequence])
    logits = torch.cat([model.lm(both[:, :, t:t + 1], torch.tensor([t]), kv_len=t + 1) for t in range(T)], 2)
    return guidance_mix(logits.float(), cfg)[0].log_softmax(-1)  # logits [2, K, T, V]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=SIZES)
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="of " + ", ".join(VARIANTS) + " (int8-weight-only: torch's weight-only product, as int8 "
                             "ran before fbgemm on CPUs below AVX-512 without cpu_kernels; skipped where int8 is that)")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}: {', '.join(VARIANTS)}")

    from tunesmith import MusicGen
    from tunesmith.cpu_int8 import packed_int8
    from tunesmith.musicgen import cpu_kernels
    from tunesmith.musicgen.patterns import apply_delay, delay_offsets

    from .bench import weight_only_int8

    folder = checkpoint_for(args.size)
    reference = MusicGen.from_pretrained(folder, device="cpu", dtype="float32")
    clip_codes = _sample_codes(reference, args.frames)
    offsets = delay_offsets(clip_codes.shape[1])
    delayed = apply_delay(clip_codes, offsets, reference._model.config.decoder.pad_token)
    sequence = torch.cat([torch.full_like(delayed[:, :, :1], reference._model.config.decoder.pad_token), delayed], -1)
    base = guided_log_probs(reference, sequence)
    del reference

    rows = []
    kernels = cpu_kernels.library()
    int8_is_weight_only = not packed_int8() or (kernels is not None and kernels.int8)
    for key in args.variants.split(","):
        name, dtype, quantize, weight_only = VARIANTS[key]
        if weight_only and int8_is_weight_only:
            continue  # int8 is weight-only here already
        with weight_only_int8(weight_only):
            variant = MusicGen.from_pretrained(folder, device="cpu", dtype=dtype, quantize=quantize)
        name += f" ({type(variant._model.lm.layers[0].fc1).__name__})"
        lp = guided_log_probs(variant, sequence)
        del variant
        kl = (base.exp() * (base - lp)).sum(-1).mean().item()
        top1 = (base.argmax(-1) == lp.argmax(-1)).float().mean().item()
        rows.append(f"| {name} | {100 * top1:.1f}% | {kl:.5f} |")

    table = "\n".join([f"### Output drift from float32, musicgen-{args.size} architecture, {args.frames} frames",
                       "", f"Hardware: {hardware()}. Command: `python -m benchmarks.fidelity --size {args.size} "
                       f"--frames {args.frames} --variants {args.variants}`.", "",
                       "| variant | top-1 agreement | mean KL(float32 ‖ variant), nats |", "| --- | ---: | ---: |",
                       *rows, ""])
    report(table, args.markdown)


def _sample_codes(mg, frames: int) -> torch.Tensor:
    from tunesmith.musicgen.generate import generate_codes
    from tunesmith.musicgen.sampling import SamplingParams

    model = mg._model
    states, mask = model.text.encode([PROMPT])
    return generate_codes(model.lm, states, mask, frames, SamplingParams(), torch.tensor([1]))


if __name__ == "__main__":
    main()
