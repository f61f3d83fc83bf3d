"""The diffusion families on a GPU: tunesmith beside diffusers' own pipeline, on the same random weights at
the real sizes, in one process, runs interleaved (median of --runs after one untimed warm-up each side).

    python -m benchmarks.gpu_diffusion --json gpu.json                 # all three, real sizes, cuda
    python -m benchmarks.gpu_diffusion --families sa3-medium --seconds 30,120 --runs 5
    python -m benchmarks.gpu_diffusion --size tiny --device cpu --runs 1   # the dry run: tiny parts, CPU

On an H200 (2026-12-04) ACE-Step and SAO took 43 s together and SA3 Medium at 120 s alone 37 s, building
included (folders of 5.5, 1.1 and 4.5 GB in bfloat16, written to the temp folder or --workdir and removed
after each family); SA3 at 30 and 120 s, about a minute.

Families, in order of value:
  sa3-medium  Stable Audio 3 Medium (1.4B DiT with differential attention, SAME-L, T5Gemma's encoder), 30 s
              and 120 s, 8 ping-pong steps (the post-trained default), against StableAudio3Pipeline.
  acestep     ACE-Step 1.5 turbo (2B DiT, Qwen3-Embedding-0.6B's sizes, the 48 kHz Oobleck VAE), 60 s of
              song with lyrics, 8 turbo steps, against AceStepPipeline.
  sao         Stable Audio Open small's sizes (341M DiT, T5-base, Oobleck), 11 s, 8 steps at guidance 1
              (small's defaults), against StableAudioPipeline. diffusers' pipeline cannot run small's own
              conditioning (one seconds token, a 768-wide global input): the folder has 1.0's (start and
              end seconds) at small's sizes, so tunesmith reads it as 1.0 and samples with dpmpp-2m-sde.

Each family's parts are built once with random weights (matrices drawn on the device; SAME-L and Oobleck
keep their own initialisation), saved as a diffusers pipeline folder in the run's half precision, and
read back by both sides as a user would: tunesmith.load(folder, device) with tunesmith's default dtype
for the device (bfloat16 on CUDA: the DiT half, the rest as tunesmith places it), and
Pipeline.from_pretrained(folder, torch_dtype=that dtype) (every part in it). A clip's time is the whole
call, prompt to audio in host memory. Peak memory is max_memory_allocated during a run above what was
allocated before it (both sides' weights stay resident). Every clip is checked finite: random weights
that overflow would make the times meaningless. A family that fails prints one line; the next still runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import shutil
import statistics
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .bench import PeakMemory, weights_mb
from .common import hardware, report

# prompts in the words of each family's tokenizer (built here: no network), so no word falls apart in letters
PROMPTS = {"sa3-medium": "warm pad bright synth calm piano drums rain on a tin roof",
           "acestep": "upbeat indie pop, female vocals, jangly guitars, bright drums, 120 bpm",  # acestep_cpu's
           "sao": "dusty vinyl hip hop beat punchy kick warm ambient pad rain on a tin roof"}
FAMILIES = ("sa3-medium", "acestep", "sao")
PIPELINES = {"sa3-medium": "StableAudio3Pipeline", "acestep": "AceStepPipeline", "sao": "StableAudioPipeline"}
SECONDS = {"real": {"sa3-medium": [30.0, 120.0], "acestep": [60.0], "sao": [11.0]},
           # tiny parts: a second or less (sao's tiny DiT makes 0.064 s at most)
           "tiny": {"sa3-medium": [0.5, 1.0], "acestep": [10.0], "sao": [0.06]}}  # ACE-Step: 10 s at least
STEPS = 8  # every family here: ping-pong (SA3), turbo (ACE-Step), small's (SAO)
# Stability's published H200 times for Stable Audio 3 Medium without TensorRT
PUBLISHED = {"sa3-medium": {30.0: 0.65, 120.0: 0.78}}


@dataclass
class Side:
    name: str
    generate: object  # seconds -> audio (host memory)
    weights_mb: float
    times: dict = field(default_factory=dict)  # seconds -> [wall s]
    peaks: dict = field(default_factory=dict)  # seconds -> [MB above resident]
    totals: dict = field(default_factory=dict)  # seconds -> [MB: the peak, both sides' weights included]
    finite: bool = True
    error: str | None = None
    stages: dict = field(default_factory=dict)  # seconds -> tunesmith's stage seconds of the last run


# --- building: a diffusers pipeline of random parts, saved as a folder --------------------------------------

def sa3_pipeline(size: str, device: str):
    from diffusers import FlowMatchEulerDiscreteScheduler, StableAudio3Pipeline
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder

    from tests.stable_audio3.tiny import tiny_tokenizer

    from .stable_audio3_cpu import build

    with torch.device(device):  # the modules' own initialisation, drawn on the GPU (seconds, not minutes)
        t5, dit, vae = build("medium" if size == "real" else "tiny-medium", fold=False)
        seconds = StableAudio3DurationEmbedder(output_dim=dit.config.global_cond_dim)
    # a word-level tokenizer (no network): unknown words map to <unk>, the prompt is padded to 256 tokens
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0, stochastic_sampling=True)
    return StableAudio3Pipeline(vae=vae, text_encoder=t5, tokenizer=tiny_tokenizer(), duration_embedder=seconds,
                                transformer=dit, scheduler=scheduler)


def acestep_pipeline(size: str, device: str):
    if size == "tiny":  # the tests' (acestep_cpu's tiny VAE is not one a folder can hold: 2 channels in, 8 out)
        from tests.acestep.tiny import tiny_pipeline

        return tiny_pipeline()
    from .acestep_cpu import build

    return build("turbo-2b", device)[1]


def sao_pipeline(size: str, device: str):
    """Stable Audio Open small's sizes in diffusers' layout, with 1.0's conditioning (see the docstring)."""
    from diffusers import (AutoencoderOobleck, CosineDPMSolverMultistepScheduler, StableAudioDiTModel,
                           StableAudioPipeline, StableAudioProjectionModel)
    from transformers import T5EncoderModel, T5TokenizerFast

    from tests.stable_audio.tiny import save_tiny_t5

    from .stable_audio_cpu import SPECS

    spec = SPECS["small" if size == "real" else "tiny"]
    with tempfile.TemporaryDirectory() as tmp:  # T5 at T5-base's sizes with a small unigram tokenizer
        save_tiny_t5(Path(tmp), **{k: v for k, v in spec.t5.items() if k != "vocab_size"})
        text_encoder = T5EncoderModel.from_pretrained(tmp)
        tokenizer = T5TokenizerFast.from_pretrained(tmp)
    tokenizer.model_max_length = spec.text_tokens
    width = spec.dit["cross_attention_input_dim"]
    with torch.device(device):
        torch.manual_seed(0)
        dit = StableAudioDiTModel(**{**spec.dit, "global_states_input_dim": 2 * width})  # start and end seconds
        vae = AutoencoderOobleck(**spec.vae)
        projection = StableAudioProjectionModel(text_encoder_dim=spec.t5["d_model"], conditioning_dim=width,
                                                min_value=0, max_value=256)
    scheduler = CosineDPMSolverMultistepScheduler(solver_order=2, prediction_type="v_prediction", sigma_data=1.0,
                                                  sigma_schedule="exponential")
    return StableAudioPipeline(vae=vae, text_encoder=text_encoder, projection_model=projection, tokenizer=tokenizer,
                               transformer=dit, scheduler=scheduler)


BUILDERS = {"sa3-medium": sa3_pipeline, "acestep": acestep_pipeline, "sao": sao_pipeline}


def save_folder(family: str, size: str, device: str, dtype: torch.dtype, root: Path) -> Path:
    folder = root / family
    pipe = BUILDERS[family](size, device).to(dtype=dtype)  # saved as it runs: half the bytes to write and read
    pipe.save_pretrained(folder, safe_serialization=True)
    del pipe
    free()
    return folder


# --- the two sides ----------------------------------------------------------------------------------------

def audio_of(x) -> np.ndarray:
    return (x.float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x))


def sides(family: str, folder: Path, device: torch.device, dtype: torch.dtype,
          what_if: bool = False) -> list[Side]:
    import diffusers

    import tunesmith

    ours = tunesmith.load(folder, device=str(device), dtype=dtype)  # default: tunesmith's for the device
    pipe = getattr(diffusers, PIPELINES[family]).from_pretrained(folder, torch_dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    prompt = PROMPTS[family]
    if family == "acestep":
        from .acestep_cpu import LYRICS

        def theirs(s):
            return pipe(prompt, lyrics=LYRICS, audio_duration=s, num_inference_steps=STEPS,
                        guidance_scale=1.0).audios[0]

        def tunesmith_call(model, s):
            return model.generate(prompt, lyrics=LYRICS, duration=s, seed=0)[0]
    elif family == "sa3-medium":
        def theirs(s):
            return pipe(prompt, duration=s, num_inference_steps=STEPS, guidance_scale=1.0).audios[0]

        def tunesmith_call(model, s):
            return model.generate(prompt, duration=s, seed=0)[0]  # its defaults: 8 ping-pong steps, cfg 1
    else:
        def theirs(s):
            return pipe(prompt, audio_end_in_s=s, num_inference_steps=STEPS, guidance_scale=1.0).audios[0]

        def tunesmith_call(model, s):
            return model.generate(prompt, duration=s, seed=0, steps=STEPS, cfg=1.0)[0]
    label = str(dtype).removeprefix("torch.")
    result = [ours_side(f"tunesmith {type(ours).__name__} ({label})", ours, tunesmith_call, device),
              Side(f"diffusers {PIPELINES[family]} ({label})", lambda s: audio_of(theirs(s)),
                   weights_mb(*[m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]))]
    if family == "sa3-medium" and what_if:  # where tunesmith's time goes: its float32 SAME-L decode
        same_half = tunesmith.load(folder, device=str(device), dtype=dtype)
        same_half._parts.vae.to(dtype)
        result.append(ours_side(f"what-if: tunesmith, SAME-L in {label}", same_half, tunesmith_call, device))
    return result


def ours_side(name: str, model, call, device: torch.device) -> Side:
    """A tunesmith side: its stage times kept, and a run that went back to the CPU counted as a failure (a
    GPU benchmark that timed the CPU would say nothing)."""
    side = Side(name, None, weights_mb(*[m for m in vars(model._parts).values() if isinstance(m, torch.nn.Module)]))

    def generate(s):
        clip = call(model, s)
        if clip.params.get("device") != str(device) and device.type != "cpu":
            raise RuntimeError(f"the run went back to the CPU ({clip.params.get('device')})")
        side.stages[s] = dict(clip.timings)
        return audio_of(clip.audio)

    side.generate = generate
    return side


@contextlib.contextmanager
def random_weights_pass_the_output_check():
    """Inside, clips are checked as random weights can pass (tests/random_weights.py): else on a GPU every clip
    would fail the check and be made again on the CPU."""
    from tests.random_weights import random_weights_check
    from tunesmith import generation

    real = generation.check_audio
    generation.check_audio = random_weights_check
    try:
        yield
    finally:
        generation.check_audio = real


def time_family(family: str, args, device: torch.device, dtype: torch.dtype, root: Path) -> dict:
    started = time.perf_counter()
    folder = save_folder(family, args.size, str(device), dtype, root)
    built = time.perf_counter() - started
    both = sides(family, folder, device, dtype, args.what_if)
    loaded = time.perf_counter() - started - built
    print(f"{family}: built and saved in {built:.0f} s, loaded (both sides) in {loaded:.0f} s", flush=True)
    seconds = args.seconds or SECONDS[args.size][family]
    with torch.inference_mode():
        for s in seconds:
            for side in both:  # warm-up at the timed length: kernels chosen, workspaces allocated, untimed
                attempt(side, s, device, timed=False)
            for _ in range(args.runs):
                for side in both:
                    attempt(side, s, device, timed=True)
    result = {"family": family, "folder_gb": folder_bytes(folder) / 2**30, "build_s": built, "load_s": loaded,
              "steps": STEPS, "dtype": str(dtype).removeprefix("torch."), "sides": [
                  {"name": side.name, "weights_mb": side.weights_mb, "finite": side.finite, "error": side.error,
                   "stages_s": {f"{s:g}": v for s, v in side.stages.items()},
                   "seconds": {f"{s:g}": {"median_s": statistics.median(side.times[s]), "runs_s": side.times[s],
                                          "peak_extra_mb": max(side.peaks[s]), "peak_allocated_mb": max(side.totals[s])}
                               for s in side.times}}
                  for side in both]}
    del both
    free()
    shutil.rmtree(folder, ignore_errors=True)
    return result


def attempt(side: Side, seconds: float, device: torch.device, timed: bool):
    """One clip; a side that fails is skipped from then on (the other side's numbers still count)."""
    if side.error:
        return
    try:
        with PeakMemory(device) as peak:
            start = time.perf_counter()
            audio = side.generate(seconds)  # in host memory: the GPU's work is done
            wall = time.perf_counter() - start
    except Exception as e:  # noqa: BLE001
        side.error = one_line(e)
        print(f"{side.name}: FAILED at {seconds:g} s: {side.error}", flush=True)
        return
    side.finite &= bool(np.isfinite(audio).all())
    if timed:
        side.times.setdefault(seconds, []).append(wall)
        side.peaks.setdefault(seconds, []).append(peak.extra_mb)
        side.totals.setdefault(seconds, []).append(peak.peak / 2**20)


def one_line(e: Exception) -> str:
    where = traceback.extract_tb(e.__traceback__)[-1]
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]} ({Path(where.filename).name}:{where.lineno})"


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def free():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- the tables -------------------------------------------------------------------------------------------

TITLES = {"sa3-medium": "Stable Audio 3 Medium (1.4B DiT, SAME-L), 8 ping-pong steps, cfg 1",
          "acestep": "ACE-Step 1.5 turbo (2B DiT), 8 turbo steps, cfg 1",
          "sao": "Stable Audio Open small's sizes (1.0's conditioning), 8 steps, cfg 1"}


def render(result: dict, args) -> str:
    family = result["family"]
    size = "" if args.size == "real" else f", {args.size} parts"
    lines = [f"### {TITLES[family]}{size} ({datetime.date.today()})", "",
             f"Hardware: {hardware()}. Command: `python -m benchmarks.gpu_diffusion {command(args, family)}`. "
             f"Median of {args.runs} interleaved run(s) after one warm-up each, random weights, batch 1; the folder "
             f"({result['folder_gb']:.1f} GB, {result['dtype']}) built in {result['build_s']:.0f} s and read by both "
             f"sides in {result['load_s']:.0f} s. Peak extra: memory allocated during a run above what was allocated "
             "before it (both sides' weights stay resident; weights: each side's own); on the CPU, resident memory.",
             "", "| side | audio (s) | per clip (s) | x real time | peak extra (MB) | weights (MB) | finite |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    lengths = list(dict.fromkeys(s for side in result["sides"] for s in side["seconds"]))
    for s in lengths:
        for side in result["sides"]:
            r = side["seconds"].get(s)
            if r:
                lines.append(f"| {side['name']} | {s} | {r['median_s']:.3f} | {float(s) / r['median_s']:.1f}x | "
                             f"{r['peak_extra_mb']:.0f} | {side['weights_mb']:.1f} | "
                             f"{'yes' if side['finite'] else 'NO: NaN or inf'} |")
    lines.append("")
    for side in result["sides"]:
        if side["error"]:
            lines.append(f"{side['name']} failed: {side['error']}")
    for side in result["sides"]:
        for s, stages in side.get("stages_s", {}).items():
            lines.append(f"{side['name']}, {s} s, the last run's stages: "
                         + ", ".join(f"{k} {v:.3f} s" for k, v in stages.items()) + ".")
    ours, theirs = result["sides"][:2]
    both = [s for s in lengths if s in ours["seconds"] and s in theirs["seconds"]]
    if both:
        lines.append("Speed-up of tunesmith over diffusers: " + ", ".join(
            f"{theirs['seconds'][s]['median_s'] / ours['seconds'][s]['median_s']:.2f}x at {s} s" for s in both) + ".")
    published = PUBLISHED.get(family, {})
    if published and args.size == "real":
        lines.append("Stability's published H200 times (no TensorRT): " + ", ".join(
            f"{s:g} s {t} s" for s, t in published.items()) + ".")
    return "\n".join(lines) + "\n"


def command(args, family: str) -> str:
    words = [f"--families {family}", f"--runs {args.runs}",
             f"--seconds {','.join(f'{s:g}' for s in args.seconds)}" if args.seconds else "",
             f"--size {args.size}" if args.size != "real" else "",
             f"--dtype {args.dtype}" if args.dtype else "",
             f"--device {args.device}" if args.device != "cuda" else "",
             "--what-if" if args.what_if and family == "sa3-medium" else ""]
    return " ".join(w for w in words if w)


def main(argv=None):
    from tunesmith.device import pick_dtype

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"in order: {', '.join(FAMILIES)}")
    parser.add_argument("--seconds", type=lambda v: [float(s) for s in v.split(",")], default=None,
                        help="comma list of clip lengths for every family (default: each family's own)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None,
                        help="both sides' (default: tunesmith's for the device, bfloat16 on CUDA)")
    parser.add_argument("--size", choices=("real", "tiny"), default="real", help="tiny: the dry run's parts")
    parser.add_argument("--what-if", action="store_true",
                        help="sa3-medium: also tunesmith with its SAME-L decoder in the DiT's half precision")
    parser.add_argument("--json", help="write the numbers here")
    parser.add_argument("--markdown", help="append the tables to this file")
    parser.add_argument("--workdir", help="where the pipeline folders go (default: the system's temp folder)")
    args = parser.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    for f in families:
        if f not in FAMILIES:
            parser.error(f"unknown family {f!r}: {', '.join(FAMILIES)}")
    device = torch.device(args.device)
    dtype = pick_dtype(args.dtype, device)  # tunesmith's default: bfloat16 on CUDA; both sides run in it
    print(f"{hardware()}; {', '.join(families)} in {str(dtype).removeprefix('torch.')}", flush=True)
    results, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.workdir) as root, random_weights_pass_the_output_check():
        for family in families:
            try:
                result = time_family(family, args, device, dtype, Path(root))
            except Exception as e:  # noqa: BLE001 - one family's failure must not cost the others their run
                print(f"{family}: FAILED: {one_line(e)}", flush=True)
                result = {"family": family, "error": one_line(e)}
            results.append(result)
            free()  # out of the except block: its traceback no longer holds the failed family's modules
            shutil.rmtree(Path(root) / family, ignore_errors=True)
            if "sides" in result:
                report(render(result, args), args.markdown)
            if args.json:  # after each family: a run stopped at its time limit keeps what it measured
                partial = Path(args.json).with_suffix(".partial")  # whole or not at all, even if killed mid-write
                partial.write_text(json.dumps({"hardware": hardware(), "date": str(datetime.date.today()),
                                               "size": args.size, "runs": args.runs, "results": results}, indent=2))
                os.replace(partial, args.json)
    print(f"total {time.perf_counter() - started:.0f} s", flush=True)
    return results


if __name__ == "__main__":
    main()
