"""tunesmith.separate against demucs' own apply_model: the same random htdemucs at its real size, the same
input, the same process, runs interleaved.

    python -m benchmarks.stems --seconds 60 --runs 1 --markdown BENCHMARKS.md

The bag is built once into the benchmark cache in the hub layout (one SIG.safetensors in float16, as the
released files are, and htdemucs.yaml) and loaded by tunesmith's loader; both engines run that one
model. demucs is called as demucs.api separates: the mix normalised, apply_model with shifts=1 and
split=True, scaled back. tunesmith's figure includes what it adds: the output check of each stem.
"""

from __future__ import annotations

import argparse
import datetime
import random
import statistics
import time
from fractions import Fraction

import numpy as np
import torch

from .bench import PeakMemory
from .common import CACHE, hardware, report

SOURCES = ["drums", "bass", "other", "vocals"]
# The released htdemucs (955717e8): demucs' htdemucs defaults with the grid's dconv_mode 3, 512 bottom
# channels and 5 transformer layers, 7.8 s segments; 42M parameters, the 84 MB of its float16 file.
HTDEMUCS = dict(dconv_mode=3, bottom_channels=512, t_layers=5, segment=Fraction(39, 5))


def bag_folder():
    """The random htdemucs bag in the hub layout, built once."""
    from demucs.htdemucs import HTDemucs

    from tests.stems.tiny import metadata_of

    folder = CACHE / "htdemucs-random"
    if not (folder / "htdemucs.yaml").exists():
        from safetensors.torch import save_file

        print(f"building a random htdemucs in {folder} (once)...", flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        model = HTDemucs(SOURCES, **HTDEMUCS)
        tensors = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(folder / "955717e8.safetensors"), metadata=metadata_of(model))
        (folder / "htdemucs.yaml").write_text("models: ['955717e8']\n")
    return folder


def music(seconds: float, rate: int = 44100) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    tones = sum(np.sin(2 * np.pi * f * t) * (1 + np.sin(2 * np.pi * t / p)) for f, p in ((55, 4), (220, 3), (659, 2)))
    return (0.1 * tones[None] + 0.02 * rng.standard_normal((2, t.size))).astype(np.float32)


def run_tunesmith(stem_model, mix, seed):
    from tunesmith import separate

    stems = separate((mix, 44100), model=stem_model, shifts=1, seed=seed)
    return np.stack([stems[name].audio for name in stem_model.sources])


def run_demucs(stem_model, mix, seed):
    from demucs.apply import apply_model

    wav = torch.from_numpy(mix)
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    random.seed(seed)
    out = apply_model(stem_model.bag, ((wav - mean) / std)[None], shifts=1, split=True, device=stem_model.device)
    return (out[0] * std + mean).numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); 1 is steadier on a machine others share")
    parser.add_argument("--markdown", default=None, help="append the table to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from tunesmith.stems import load_stem_model

    stem_model = load_stem_model(bag_folder(), device=args.device)
    params = sum(p.numel() for p in stem_model.bag.parameters()) / 1e6
    mix = music(args.seconds)
    engines = {"tunesmith.separate": run_tunesmith, "demucs apply_model": run_demucs}
    seconds = {name: [] for name in engines}
    memory = {name: 0.0 for name in engines}
    outputs = {}
    for run in range(args.runs):
        order = list(engines.items())
        for name, fn in order if run % 2 == 0 else order[::-1]:  # neither always first on a busy machine
            with PeakMemory(torch.device(args.device)) as peak:
                start = time.perf_counter()
                outputs[name] = fn(stem_model, mix, seed=run)
                seconds[name].append(time.perf_counter() - start)
            memory[name] = max(memory[name], peak.extra_mb)
    drift = float(np.abs(outputs["tunesmith.separate"] - outputs["demucs apply_model"]).max())
    reference = statistics.median(seconds["demucs apply_model"])
    lines = [
        f"### htdemucs ({params:.0f}M parameters, random weights), {args.seconds:g} s of stereo at 44.1 kHz, "
        f"shifts 1 ({datetime.date.today()})",
        "",
        f"Hardware: {hardware()}. Command: `python -m benchmarks.stems --seconds {args.seconds:g} --runs {args.runs}"
        f"{'' if args.device == 'cpu' else f' --device {args.device}'}"
        f"{f' --threads {args.threads}' if args.threads else ''}`. Median of {args.runs} interleaved run(s), the order alternating; "
        f"largest difference between the two engines' stems: {drift:.1e}.",
        "",
        "| engine | seconds | real-time factor | peak extra memory (MB) | time vs apply_model |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in engines:
        wall = statistics.median(seconds[name])
        lines.append(f"| {name} | {wall:.1f} | {args.seconds / wall:.2f}x | {memory[name]:.0f} | "
                     f"{wall / reference:.2f}x |")
    report("\n".join(lines) + "\n", args.markdown)


if __name__ == "__main__":
    main()
