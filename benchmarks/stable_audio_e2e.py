"""Stable Audio Open end to end, as a user runs it: `tunesmith.load(folder).generate(prompt, duration)`
on a stable-audio-tools checkpoint with random weights at stable-audio-open-small's sizes, float32
(diffusers' own modules: the reference path) beside the CPU path's defaults, in one process, runs
interleaved after a warm-up of each. Everything a call does is timed: tokenizing, T5, the ping-pong
loop with its per-step noise, the decode, the output check.

    python -m benchmarks.stable_audio_e2e                    # 11.9 s of audio, 8 steps, 2 runs each
    python -m benchmarks.stable_audio_e2e --variants float32,bfloat16,int8 --runs 3 --markdown BENCHMARKS.md

The checkpoint (about 2.4 GB: DiT, VAE and a T5 of T5-base's sizes with a small vocabulary) is built
once under the bench cache (TUNESMITH_BENCH_CACHE).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

import numpy as np

from .bench import PeakMemory
from .common import CACHE, hardware, report

# stabilityai/stable-audio-open-small's model_config.json (the parts tunesmith reads), T5-base's sizes.
_OOBLECK = {"channels": 128, "c_mults": [1, 2, 4, 8, 16], "strides": [2, 4, 4, 8, 8], "use_snake": True}
SMALL_CONFIG = {
    "model_type": "diffusion_cond", "sample_size": 524288, "sample_rate": 44100, "audio_channels": 2,
    "model": {
        "pretransform": {"type": "autoencoder", "iterate_batch": True, "config": {
            "encoder": {"type": "oobleck", "config": {"in_channels": 2, "latent_dim": 128, **_OOBLECK}},
            "decoder": {"type": "oobleck", "config": {"out_channels": 2, "latent_dim": 64, "final_tanh": False,
                                                      **_OOBLECK}},
            "bottleneck": {"type": "vae"}, "latent_dim": 64, "downsampling_ratio": 2048, "io_channels": 2}},
        "conditioning": {"configs": [
            {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5-base", "max_length": 64}},
            {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 256}}],
            "cond_dim": 768},
        "diffusion": {
            "cross_attention_cond_ids": ["prompt", "seconds_total"], "global_cond_ids": ["seconds_total"],
            "type": "dit", "diffusion_objective": "rf_denoiser",
            "config": {"io_channels": 64, "embed_dim": 1024, "depth": 16, "num_heads": 8, "cond_token_dim": 768,
                       "global_cond_dim": 768, "transformer_type": "continuous_transformer",
                       "attn_kwargs": {"qk_norm": "ln"}}},
        "io_channels": 64}}
T5_BASE = dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)
PROMPT = "dusty vinyl hip hop beat punchy kick warm ambient pad slow rain on a tin roof"
VARIANTS = {"float32": ("float32", None), "bfloat16": ("bfloat16", None), "int8": ("bfloat16", "int8")}


def small_checkpoint():
    from tests.stable_audio.tiny import save_tiny_tools_checkpoint

    folder = CACHE / "stable-audio-open-small"
    if not (folder / "model.safetensors").exists():
        print(f"building a random stable-audio-open-small checkpoint in {folder} (once)...", flush=True)
        save_tiny_tools_checkpoint(folder, config=SMALL_CONFIG, t5_sizes=T5_BASE)
    return folder


def main(argv=None):
    import torch

    import tunesmith

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="float32,bfloat16,int8")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=None, help="default: the model's longest clip")
    parser.add_argument("--markdown", default=None, help="append the table to this file")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    folder = small_checkpoint()
    models = {name: tunesmith.load(folder, device="cpu", dtype=VARIANTS[name][0], quantize=VARIANTS[name][1])
              for name in names}
    seconds = args.seconds or next(iter(models.values())).max_seconds
    times = {name: [] for name in names}
    stages = {name: [] for name in names}
    peaks, audio = {}, {}
    for name, model in models.items():  # warm-up: kernels built, workspaces allocated
        model.generate(PROMPT, duration=seconds, seed=0)
    for _ in range(args.runs):
        for name, model in models.items():
            with PeakMemory(torch.device("cpu")) as peak:
                start = time.perf_counter()
                clip = model.generate(PROMPT, duration=seconds, seed=0)[0]
                times[name].append(time.perf_counter() - start)
            peaks[name] = max(peaks.get(name, 0.0), peak.extra_mb)
            stages[name].append(clip.timings)
            audio[name] = clip.audio

    def snr(name):
        ref, x = audio.get("float32"), audio[name]
        return "" if ref is None or name == "float32" else f"{10 * np.log10((ref ** 2).sum() / ((ref - x) ** 2).sum()):.1f}"

    base = statistics.median(times["float32"]) if "float32" in times else None
    date = datetime.date.today().isoformat()
    lines = [f"### stable-audio-open-small through tunesmith.load, {seconds:.1f} s, 8 ping-pong steps ({date})", "",
             f"Hardware: {hardware()}. Command: `python -m benchmarks.stable_audio_e2e --variants {args.variants} "
             f"--runs {args.runs}`. Median of {args.runs} interleaved runs, random weights.", "",
             "| dtype | text (s) | DiT, 8 steps (s) | VAE (s) | end to end (s) | real-time factor | speed-up | "
             "peak extra MB | SNR vs float32 (dB) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in names:
        total = statistics.median(times[name])
        part = {k: statistics.median(s.get(k, 0.0) for s in stages[name]) for k in ("text", "dit", "vae")}
        label = name + (" (diffusers' modules)" if name == "float32" else "")
        ratio = f"{base / total:.1f}x" if base else ""
        lines.append(f"| {label} | {part['text']:.2f} | {part['dit']:.2f} | {part['vae']:.2f} | {total:.2f} | "
                     f"{seconds / total:.1f}x | {ratio} | {peaks[name]:.0f} | {snr(name)} |")
    report("\n".join(lines) + "\n", args.markdown)


if __name__ == "__main__":
    main()
