"""What a LoRA adapter costs: the seconds to merge it as the model loads, and the decode step after it
(unchanged: the merged weights have the base's shapes and go through the same packed or int8 kernels).

    python -m benchmarks.lora_merge --size small --rank 16 --variants default,int8 --markdown BENCHMARKS.md

MusicGen's decoder at a real size (benchmarks.common.checkpoint_for: random weights, built once) and a random
rank-16 PEFT adapter on every layer's attention (self and cross: q, k, v, out) and MLP (fc1, fc2) linears,
the layers mlx-audiogen's trainer adapts. Reported: reading and checking the adapter (s); the merge alone,
into float32 weights of the decoder's shapes (s: what load() adds besides reading the decoder in float32);
load() without and with the adapter (s, once each, the libraries imported before); then per variant the median decode step at --position
(one prompt with guidance, 2 rows) without and with the adapter, the two models timed in alternation.

    python -m benchmarks.lora_merge --memory --variants default,int8 --markdown BENCHMARKS.md
    python -m benchmarks.lora_merge --family acestep --rank 16 --markdown BENCHMARKS.md

--memory: what a server with --lora-dir keeps (load(swap_lora=True): on the packed or quantized CPU paths the
decoder's float32 weights beside their packed form), as resident memory (RSS, MB) of a fresh process after the
libraries are imported, after load() without and with swap_lora, and its peak; one load each, no timing.
--family acestep: ACE-Step's DiT at the 2B turbo's sizes (AceStepTransformer1DModel's defaults, built on the
meta device: no checkpoint), a rank-`--rank` PEFT adapter on every layer's attention (self and cross: q, k, v,
o) and MLP (gate, up, down) in ACE-Step's trainer's names: reading and checking it, the server's submit check
from its header (first and kept), and the merge into random float32 weights, one DiT layer at a time (about
280 MB held at once, never the 8 GB DiT); the float32 DiT a swappable CPU model keeps is computed from its
parameter count.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
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


RSS_CHILD = """
import json, resource, sys
def rss():
    return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmRSS:"))
import torch, tunesmith
from transformers import EncodecModel, T5EncoderModel
options = json.loads(sys.argv[2])
before = rss()
model = tunesmith.load(sys.argv[1], device="cpu", **options)
base = getattr(getattr(model, "_swap", None), "base", None) or {}
print(json.dumps(dict(before=before, after=rss(), peak=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      dtype=str(model.dtype)[6:], base=sum(t.numel() * t.element_size() for t in base.values()) / 2**20)))
"""


def load_rss(folder: Path, options: dict) -> dict:
    """RSS (MB) of a fresh process before and after load(folder, **options), its peak, the decoder's dtype and
    the float32 base the swap keeps (MB)."""
    out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(folder), json.dumps(options)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory(args):
    folder = checkpoint_for(args.size)
    rows = []
    for variant in args.variants.split(","):
        options = {"quantize": variant} if variant != "default" else {}
        for swap in (False, True):
            m = load_rss(folder, {**options, "swap_lora": swap})
            rows.append(f"| {variant} ({m['dtype']}) | {'yes' if swap else 'no'} | {m['before']:.0f} | {m['after']:.0f} "
                        f"| {m['after'] - m['before']:.0f} | {m['peak']:.0f} | {m['base']:.0f} |")
            print(rows[-1], flush=True)
    report("\n".join([
        f"### What a server with --lora-dir keeps: musicgen-{args.size} on the CPU (RSS)", "",
        f"Hardware: {hardware()}. Command: `python -m benchmarks.lora_merge --memory --size {args.size} "
        f"--variants {args.variants}` (one load each, in a fresh process).", "",
        "| variant | swap_lora (--lora-dir) | RSS before load (MB) | after load (MB) | load adds (MB) | peak (MB) "
        "| float32 base kept (MB) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |", *rows, ""]), args.markdown)


ACE_PROJECTIONS = [f"{attn}.{p}" for attn in ("self_attn", "cross_attn") for p in ("q_proj", "k_proj", "v_proj", "o_proj")] \
    + [f"mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")]


def acestep(args):
    import gc
    import re
    from collections import defaultdict

    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
    from safetensors.torch import save_file

    from tunesmith.acestep.adapters import RENAMES, linear_shapes, locate
    from tunesmith.lora import check_fit, fit, merge, parse_specs, read_adapters

    with torch.device("meta"):
        dit = AceStepTransformer1DModel()  # its defaults are the 2B turbo's (benchmarks.acestep_cpu)
    shapes, params = linear_shapes(dit), sum(p.numel() for p in dit.parameters())
    layers = dit.config.num_hidden_layers
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(layers):
        for proj in ACE_PROJECTIONS:
            module, name = proj.rsplit(".", 1)
            out, width = shapes[f"layers.{i}.{module}.{RENAMES.get(name, name)}.weight"]
            key = f"base_model.model.layers.{i}.{proj}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(args.rank, width, generator=g) / width ** 0.5
            tensors[f"{key}.lora_B.weight"] = 0.01 * torch.randn(out, args.rank, generator=g)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "adapter"
        folder.mkdir()
        save_file(tensors, str(folder / "adapter_model.safetensors"))
        (folder / "adapter_config.json").write_text(json.dumps(dict(peft_type="LORA", r=args.rank,
                                                                    lora_alpha=2 * args.rank)))
        tensors = None
        checks = []
        for _ in range(6):  # the server's submit check: its header read (the first), then kept
            start = time.perf_counter()
            check_fit("lora 'bench'", folder, locate, shapes, "the DiT")
            checks.append(time.perf_counter() - start)
        start = time.perf_counter()
        patches = fit(read_adapters(parse_specs(folder)), locate, shapes, "the DiT")
        read = time.perf_counter() - start
    by_layer = defaultdict(list)
    for patch in patches:
        by_layer[int(re.match(r"layers\.(\d+)\.", patch.target.weight)[1])].append(patch)
    merged = 0.0
    for group in by_layer.values():  # one layer's weights at a time: the merge's cost, not 8 GB held
        weights = {p.target.weight: torch.randn(shapes[p.target.weight], generator=g) for p in group}
        start = time.perf_counter()
        merge(weights, group)
        merged += time.perf_counter() - start
        weights = None
        gc.collect()
    report("\n".join([
        f"### A rank-{args.rank} LoRA on ACE-Step 1.5's DiT (2B turbo sizes): merge cost", "",
        f"Hardware: {hardware()}. Command: `python -m benchmarks.lora_merge --family acestep --rank {args.rank}` "
        "(random weights, one round).", "",
        f"The adapter: {len(patches)} layers ({len(ACE_PROJECTIONS)} linears in each of {layers} DiT layers). Read "
        f"and checked: {read:.2f} s. The server's submit check from its header: {checks[0] * 1e3:.1f} ms with the "
        f"header read, {statistics.median(checks[1:]) * 1e3:.1f} ms with it kept (median of 5). Merged into float32 "
        f"weights: {merged:.2f} s.", "",
        f"The DiT has {params / 1e9:.2f} B weights: a swappable CPU model (`swap_lora=True`, a server with "
        f"--lora-dir) keeps them in float32 beside the CPU path's bfloat16/int8 DiT, {params * 4 / 2**30:.1f} GiB "
        "(computed from the parameter count, not measured: a 2B checkpoint cannot be downloaded here, and building "
        "one on disk and loading it twice does not fit a shared 24 GB machine).", ""]), args.markdown)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=SIZES)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--position", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=10, help="steps per timing")
    parser.add_argument("--rounds", type=int, default=5, help="timings per model, in alternation (the median)")
    parser.add_argument("--variants", default="default,int8")
    parser.add_argument("--markdown")
    parser.add_argument("--family", default="musicgen", choices=("musicgen", "acestep"))
    parser.add_argument("--memory", action="store_true", help="RSS after load() without and with swap_lora")
    args = parser.parse_args(argv)
    if args.family == "acestep":
        return acestep(args)
    if args.memory:
        return memory(args)

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
            rows.append(f"| {variant} ({str(base.dtype)[6:]}) | {base_s:.2f} | {adapted_s:.2f} | {ms['base']:.2f} "
                        f"| {ms['lora']:.2f} | {100 * (ms['lora'] / ms['base'] - 1):+.1f}% |")
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
