"""tunesmith against transformers `generate`, same random weights, same process, runs interleaved.

    python -m benchmarks.bench --size small --duration 10
    python -m benchmarks.bench --size small --variants default,int8 --markdown results.md

Prints ms per decode step, real-time factor (audio seconds per wall second), end-to-end seconds,
time to first audio step, the share of T5 / decoder / EnCodec, the weights' size, peak extra memory (the
GPU's on CUDA, resident memory on the CPU), and the speed-up.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field

import torch

from tunesmith.generation import pin_threads

from .common import SIZES, checkpoint_for, hardware, report

PROMPT = "calm lofi piano with vinyl crackle, 80 bpm"


class PeakMemory:
    """Peak memory above the level at start: the GPU's allocations on CUDA, else resident memory
    sampled every few milliseconds (after handing freed heap back to the system, so that memory
    an earlier run freed does not hide this run's growth)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
            return self
        _return_freed_heap()
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
            return
        self._stop.set()
        self._thread.join()

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def _return_freed_heap():
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc only; elsewhere the figure may read low
    except (OSError, AttributeError):
        pass


def weights_mb(*modules: torch.nn.Module) -> float:
    """Bytes held by the modules' parameters and buffers (int8 / packed weights at their stored size), and by
    fbgemm's packed int8 weights (held outside any tensor: `.product`, cpu_int8.PackedInt8Linear)."""
    from tunesmith.cpu_int8 import PackedInt8Linear

    tensors = {id(t): t for m in modules for t in list(m.parameters()) + list(m.buffers())}
    packed = {id(p): p for m in modules for sub in m.modules()
              if isinstance(p := getattr(sub, "product", None), PackedInt8Linear)}
    return (sum(t.numel() * t.element_size() for t in tensors.values())
            + sum(p.nbytes for p in packed.values())) / 2**20


@dataclass
class Result:
    name: str
    wall: list[float] = field(default_factory=list)
    first_step: list[float] = field(default_factory=list)
    extra_mb: list[float] = field(default_factory=list)
    stages: dict = field(default_factory=dict)
    weights_mb: float = 0.0


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_tunesmith(mg, duration, batch, result: Result):
    first = []

    def first_step(done, total):
        if not first:
            sync(mg.device)  # on CUDA the step is queued, not done, when progress is reported
            first.append(time.perf_counter())

    with PeakMemory(mg.device) as mem:
        t0 = time.perf_counter()
        clips = mg.generate([PROMPT] * batch, duration=duration, seed=1, top_k=250, cfg=3.0, progress=first_step)
        sync(mg.device)
    result.wall.append(time.perf_counter() - t0)
    result.first_step.append(first[0] - t0)
    result.extra_mb.append(mem.extra_mb)
    for stage, seconds in clips[0].timings.items():
        result.stages.setdefault(stage, []).append(seconds)


class _FirstStep:
    """A transformers logits processor that notes when the first decode step reaches sampling."""

    def __init__(self):
        self.first = None

    def __call__(self, input_ids, scores):
        if self.first is None:
            sync(scores.device)
            self.first = time.perf_counter()
        return scores


def run_transformers(model, tokenizer, n_steps, batch, device, result: Result):
    from transformers import LogitsProcessorList

    inputs = tokenizer([PROMPT] * batch, return_tensors="pt", padding=True).to(device)
    first = _FirstStep()
    with PeakMemory(device) as mem, torch.inference_mode():
        t0 = time.perf_counter()
        model.generate(**inputs, do_sample=True, top_k=250, guidance_scale=3.0, max_new_tokens=n_steps,
                       logits_processor=LogitsProcessorList([first]))
        sync(device)
    result.wall.append(time.perf_counter() - t0)
    result.first_step.append(first.first - t0)
    result.extra_mb.append(mem.extra_mb)


@contextlib.contextmanager
def weight_only_int8(on: bool):
    """Inside: int8 loads as torch's weight-only product (Int8Linear) even where fbgemm's would be chosen."""
    from tunesmith.musicgen import linear

    real = linear.packed_int8
    if on:
        linear.packed_int8 = lambda: False
    try:
        yield
    finally:
        linear.packed_int8 = real


def with_compiled_step(mg):
    """mg, with its static decode step compiled by torch.compile (inductor) while it generates: the step's ~20
    kernels a layer fused where inductor can, the lever the H200's profile points at (BENCHMARKS.md). On CUDA
    the graph captures the compiled step; on the CPU tunesmith decodes eagerly and nothing changes. An
    experiment beside the default, not tunesmith's own path."""
    from tunesmith.musicgen import generate

    compiled, plain = torch.compile(generate.static_step, dynamic=False), mg.generate

    def generate_compiled(*args, **kwargs):
        real = generate.static_step
        generate.static_step = compiled  # StepGraph's step looks it up at each call: warm-up and capture
        try:
            return plain(*args, **kwargs)
        finally:
            generate.static_step = real

    mg.generate = generate_compiled
    return mg


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=SIZES)
    parser.add_argument("--stereo", action="store_true")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1, help="prompts in one batch")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--variants", default="default,int8",
                        help="tunesmith variants: default, float32, bfloat16, float16, int8, int4; int8w: int8 "
                             "through torch's weight-only product, as before fbgemm on CPUs below AVX-512; "
                             "compiled: the default with its CUDA-graph step compiled by torch.compile")
    parser.add_argument("--no-reference", action="store_true", help="skip transformers")
    parser.add_argument("--markdown", help="append the table to this markdown file")
    parser.add_argument("--profile", type=float, default=0, metavar="SECONDS",
                        help="then profile the first variant on this much audio: torch.profiler's table")
    args = parser.parse_args(argv)
    pin_threads(torch.get_num_threads())  # both sides on the same threads: no per-call back-off

    from transformers import AutoTokenizer, MusicgenForConditionalGeneration

    from tunesmith import MusicGen
    from tunesmith.quiet import quiet_loading
    from tunesmith.device import pick_device

    device = pick_device(args.device)
    folder = checkpoint_for(args.size, args.stereo)
    engines = {}
    for variant in args.variants.split(","):
        quantized = variant in ("int8", "int4", "int8w")
        kwargs = ({"quantize": variant[:4]} if quantized else {} if variant in ("default", "compiled")
                  else {"dtype": variant})
        with weight_only_int8(variant == "int8w"):
            mg = MusicGen.from_pretrained(folder, device=str(device), **kwargs)
        if variant == "compiled":
            mg = with_compiled_step(mg)
        engines[f"tunesmith {variant} ({str(mg.dtype)[6:]}{', ' + variant if quantized else ''})"] = mg
    n_frames = round(args.duration * 50)
    per_channel = 4
    reference = None
    if not args.no_reference:
        ref_dtype = torch.float16 if device.type == "cuda" else torch.float32
        with quiet_loading(diffusers=False):
            reference = MusicgenForConditionalGeneration.from_pretrained(folder, dtype=ref_dtype).to(device).eval()
            tokenizer = AutoTokenizer.from_pretrained(folder)
        ref_name = f"transformers generate ({str(ref_dtype)[6:]})"

    # Weights are counted before any run, while the decoder holds no cache yet.
    results = {name: Result(name, weights_mb=weights_mb(mg._model.lm, mg._model.text.encoder, mg._model.codec))
               for name, mg in engines.items()}
    if reference is not None:
        results[ref_name] = Result(ref_name, weights_mb=weights_mb(reference))
    # Warm-up: one short run each, not timed; a compiled step compiles for each shape: the timed one's
    for name, mg in engines.items():
        compiled = name.startswith("tunesmith compiled")
        mg.generate([PROMPT] * (args.batch if compiled else 1), duration=args.duration if compiled else 0.5, seed=0)
    if reference is not None:
        run_transformers(reference, tokenizer, 10, 1, device, Result("warm-up"))
    for run in range(args.runs):
        for name, mg in engines.items():
            run_tunesmith(mg, args.duration, args.batch, results[name])
            print(f"run {run + 1}: {name}: {results[name].wall[-1]:.1f} s", flush=True)
        if reference is not None:
            run_transformers(reference, tokenizer, n_frames + per_channel - 1, args.batch, device, results[ref_name])
            print(f"run {run + 1}: {ref_name}: {results[ref_name].wall[-1]:.1f} s", flush=True)

    table = render(results, args, n_frames + per_channel - 1, ref_name if reference is not None else None, device)
    if args.profile:
        table += "\n" + profile(next(iter(engines.values())), args.profile, args.batch)
    report(table, args.markdown)


def profile(mg, duration: float, batch: int, rows: int = 15) -> str:
    """torch.profiler's table of one generation, the operations that took longest first (the GPU's time on
    CUDA): where a step's time goes."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    cuda = mg.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profiler(activities=activities) as prof:
        mg.generate([PROMPT] * batch, duration=duration, seed=1, top_k=250, cfg=3.0)
        sync(mg.device)
    sort = "device_time_total" if cuda else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=rows, max_name_column_width=60)
    return f"Profile of one generation, {duration:g} s, batch {batch}, by {sort}:\n\n```\n{table}\n```\n"


def render(results, args, steps, ref_name, device) -> str:
    ref_wall = statistics.median(results[ref_name].wall) if ref_name else None
    lines = [
        f"### musicgen-{'stereo-' if args.stereo else ''}{args.size}, {args.duration:g} s, batch {args.batch}, "
        f"cfg 3, top-k 250 ({datetime.date.today()})",
        "",
        f"Hardware: {hardware()}. Command: `python -m benchmarks.bench {' '.join(sys.argv[1:])}`. "
        f"Median of {args.runs} interleaved runs, random weights.",
        "",
        "| engine | ms / step | real-time factor | end to end (s) | first step (s) | T5 / LM / EnCodec | "
        f"weights (MB) | peak extra {'GPU ' if device.type == 'cuda' else ''}memory (MB) | "
        "speed-up vs transformers |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        wall = statistics.median(r.wall)
        stages = " / ".join(f"{100 * statistics.median(r.stages[s]) / wall:.0f}%" for s in ("text", "lm", "codec")) \
            if r.stages else "n/a"
        speedup = f"{ref_wall / wall:.1f}x" if ref_wall else "n/a"
        lines.append(f"| {name} | {1000 * wall / steps:.1f} | {args.duration * args.batch / wall:.2f}x | {wall:.1f} | "
                     f"{statistics.median(r.first_step):.2f} | {stages} | {r.weights_mb:.0f} | "
                     f"{max(r.extra_mb):.0f} | {speedup} |")
    lines.append("")
    lines.append("ms / step is end-to-end wall time (T5, decoder, EnCodec) over the decode steps "
                 f"({steps} = frames + 3 delay steps); real-time factor is audio seconds (all prompts) per wall second.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
