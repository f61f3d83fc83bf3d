"""What a LoRA adapter costs: the seconds to merge it as the model loads, and the decode step after it
(unchanged: the merged weights have the base's shapes and go through the same packed or int8 kernels).

    python -m benchmarks.lora_merge --size small --rank 16 --variants default,int8 --markdown BENCHMARKS.md

MusicGen's decoder at a real size (benchmarks.common.checkpoint_for: random weights, built once) and a random
rank-16 PEFT adapter on every layer's attention (self and cross: q, k, v, out) and MLP (fc1, fc2) linears,
the layers mlx-audiogen's trainer adapts. Reported: reading and checking the adapter (s); the merge alone,
into float32 weights of the decoder's shapes (s: what load() adds besides reading the decoder in float32);
load() without and with the adapter (s, once each, the libraries imported before); then per variant the median decode step at --position
(one prompt with guidance, 2 rows) without and with the adapter, the two models timed in alternation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from .common import SIZES, checkpoint_for, hardware, report

PROJECTIONS = [f"{attn}.{p}_proj" for attn in ("self_attn", "encoder_attn") for p in "qkv"] + \
    ["self_attn.out_proj", "encoder_attn.out_proj", "fc1", "fc2"]


def write_adapter(folder: Path, cfg, rank: int, seed: int = 0) -> Path:
    """A PEFT folder over transformers' MusicGen: rank-`rank` A and B (alpha 2 x rank) on every layer."""
    from safetensors.torch import save_file

    widths = {"fc1": (cfg.dim, cfg.ffn_dim), "fc2": (cfg.ffn_dim, cfg.dim)}
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for i in range(cfg.n_layers):
        for proj in PROJECTIONS:
            width, out = widths.get(proj, (cfg.dim, cfg.dim))
            key = f"base_model.model.decoder.model.decoder.layers.{i}.{proj}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, width, generator=g) / width ** 0.5
            tensors[f"{key}.lora_B.weight"] = 0.01 * torch.randn(out, rank, generator=g)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps(dict(peft_type="LORA", r=rank, lora_alpha=2 * rank)))
    return folder


def merge_seconds(adapter: Path, cfg) -> tuple[float, float, int]:
    """(reading and checking the adapter, merging it into float32 weights of the decoder's shapes, layers)."""
    from tunesmith.lora import fit, merge, parse_specs, read_adapters
    from tunesmith.musicgen.adapters import lm_weights, locator
    from tunesmith.musicgen.lm import MusicGenLM

    with torch.device("meta"):
        shapes = {name: tuple(w.shape) for name, w in lm_weights(MusicGenLM(cfg)).items()}
    start = time.perf_counter()
    patches = fit(read_adapters(parse_specs(adapter)), locator(cfg), shapes, "the decoder")
    read = time.perf_counter() - start
    weights = {name: torch.randn(shapes[name]) for name in {p.target.weight for p in patches}}
    start = time.perf_counter()
    merge(weights, patches)
    return read, time.perf_counter() - start, len(patches)


def timed_load(folder: Path, **options):
    from tunesmith import MusicGen

    start = time.perf_counter()
    model = MusicGen.from_pretrained(folder, device="cpu", **options)
    return model, time.perf_counter() - start


def stepper(model, position: int):
    """One decode step at `position` of this model, as benchmarks.step times it."""
    from tunesmith.musicgen.conditioning import with_null_condition
    from tunesmith.musicgen.generate import decode_step
    from tunesmith.musicgen.sampling import SamplingParams

    lm = model._model.lm
    lm.set_condition(*with_null_condition(*model._model.text.encode(["calm lofi piano"])))
    lm.setup_cache(batch=2, max_len=position + 2)
    codes = torch.zeros((1, lm.cfg.n_codebooks, 1), dtype=torch.long)
    params, seeds, pos = SamplingParams(), torch.tensor([1]), torch.tensor([position])
    return lambda: decode_step(lm, codes, pos, params, seeds, pos[0], position + 1)


def alternating_ms(steps: dict, repeats: int, rounds: int) -> dict[str, float]:
    """The median over `rounds` of each step's mean time over `repeats` calls, the steps taking turns."""
    times = {name: [] for name in steps}
    with torch.inference_mode():
        for step in steps.values():
            for _ in range(3):
                step()
        for _ in range(rounds):
            for name, step in steps.items():
                start = time.perf_counter()
                for _ in range(repeats):
                    step()
                times[name].append((time.perf_counter() - start) / repeats * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=SIZES)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--position", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=10, help="steps per timing")
    parser.add_argument("--rounds", type=int, default=5, help="timings per model, in alternation (the median)")
    parser.add_argument("--variants", default="default,int8")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)

    from tunesmith.musicgen.loader import read_config

    folder = checkpoint_for(args.size)
    cfg = read_config(folder).decoder
    with tempfile.TemporaryDirectory() as tmp:
        adapter = write_adapter(Path(tmp) / "adapter", cfg, args.rank)
        read, merged, layers = merge_seconds(adapter, cfg)
        rows = []
        from transformers import EncodecModel, T5EncoderModel  # noqa: F401 (imported before any load is timed)
        for variant in args.variants.split(","):
            options = {"quantize": variant} if variant != "default" else {}
            base, base_s = timed_load(folder, **options)
            adapted, adapted_s = timed_load(folder, lora=f"{adapter}@1", **options)
            ms = alternating_ms({"base": stepper(base, args.position), "lora": stepper(adapted, args.position)},
                                args.repeats, args.rounds)
            rows.append(f"| {variant} ({str(base.dtype)[6:]}) | {base_s:.1f} | {adapted_s:.1f} | {ms['base']:.1f} "
                        f"| {ms['lora']:.1f} | {100 * (ms['lora'] / ms['base'] - 1):+.1f}% |")
            print(rows[-1], flush=True)  # as it comes: a long run stopped early keeps what it measured
            base = adapted = None  # freed before the next variant loads

    table = "\n".join([
        f"### A rank-{args.rank} LoRA on musicgen-{args.size}'s decoder: merge cost and step time", "",
        f"Hardware: {hardware()}. Command: `python -m benchmarks.lora_merge --size {args.size} --rank {args.rank} "
        f"--position {args.position} --variants {args.variants}`.", "",
        f"The adapter: {layers} layers ({len(PROJECTIONS)} linears in each of {cfg.n_layers} decoder layers). "
        f"Read and checked: {read:.2f} s; merged into float32 weights: {merged:.2f} s.", "",
        f"| variant | load() (s) | load() with the adapter (s) | step at {args.position} (ms) "
        f"| step with the adapter (ms) | difference |",
        "| --- | ---: | ---: | ---: | ---: | ---: |", *rows, ""])
    report(table, args.markdown)


if __name__ == "__main__":
    main()
