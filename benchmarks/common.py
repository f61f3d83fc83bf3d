"""Shared by the benchmarks: random-weight checkpoints at the real sizes, machine facts."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

from tunesmith.paths import cache_root


def bench_cache() -> Path:
    """$TUNESMITH_BENCH_CACHE, else the bench folder of tunesmith's cache (the same root as the kernels)."""
    return Path(os.environ.get("TUNESMITH_BENCH_CACHE") or cache_root() / "bench")


CACHE = bench_cache()
# "tiny" is the test suite's checkpoint: it checks that a benchmark runs end to end (tests do), not speed.
SIZES = ("small", "medium", "large", "tiny")


def checkpoint_for(size: str, stereo: bool = False) -> Path:
    """A transformers-layout checkpoint with random weights at the real architecture size, built once."""
    from tests.checkpoints import save_checkpoint

    folder = CACHE / f"{'stereo-' if stereo else ''}{size}"
    if not (folder / "config.json").exists():
        print(f"building a random {folder.name} checkpoint in {folder} (once)...", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint(folder, stereo=stereo, size=None if size == "tiny" else size)
    return folder


def random_decoder(cfg, dtype: torch.dtype = torch.bfloat16, quantize: str | None = None, seed: int = 0):
    """A MusicGenLM for `cfg` (a DecoderConfig) with random weights, on the CPU, without a checkpoint:
    built in `dtype` and given its step linears as the loader does (packed bfloat16, or int8)."""
    from tunesmith.musicgen.linear import specialise_linears
    from tunesmith.musicgen.lm import MusicGenLM, sinusoidal_positions

    with torch.device("meta"):
        lm = MusicGenLM(cfg).to(dtype)
    lm.to_empty(device="cpu")  # in dtype from the start: no float32 copy of a 1.5B decoder
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in lm.named_parameters():  # matrices random, norms 1 and biases 0
            p.normal_(0, 0.02, generator=generator) if p.dim() > 1 else p.fill_(float(name.endswith("weight")))
    lm.positions = sinusoidal_positions(cfg.max_positions, cfg.dim).to(dtype)  # as the loader: derived
    specialise_linears(lm.eval(), torch.device("cpu"), quantize)
    return lm


def hardware() -> str:
    """The CPU (model, the features that decide the kernels, cores, torch threads), and the GPU where there
    is one: a CPU benchmark run on a GPU machine names its CPU too."""
    model = platform.processor() or "CPU"
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0].split())
    except (OSError, IndexError):
        flags = set()
    shown = [f for f in ("avx512_bf16", "amx_bf16", "avx512f", "avx2") if f in flags][:2]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = (f"{model}{' (' + ', '.join(shown) + ')' if shown else ''}, {cores} cores, "
           f"{torch.get_num_threads()} torch threads")
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}) with {cpu}, torch {torch.__version__}"
    return f"{cpu}, torch {torch.__version__}"


def report(table: str, markdown: str | None):
    """Print a result table, and append it to a markdown file when one is named."""
    print(table)
    if markdown:
        with open(markdown, "a") as f:
            f.write(table + "\n")
