"""ACE-Step 1.5 on the CPU: tunesmith's AceStep beside diffusers' AceStepPipeline, on the same modules with
random weights at the 2B turbo's sizes (acestep-v15-turbo: a 24-layer DiT of width 2048, Qwen3-Embedding-0.6B's
sizes for the text encoder, the condition encoder, the 48 kHz Oobleck VAE), in one process, float32.

    python -m benchmarks.acestep_cpu                         # 30 s of song, 8 turbo steps, 1 run each
    python -m benchmarks.acestep_cpu --seconds 30 --runs 1 --cpu bfloat16,int8 --markdown BENCHMARKS.md
    python -m benchmarks.acestep_cpu --dit                   # the DiT alone: step time and SNR per dtype
    python -m benchmarks.acestep_cpu --vae --seconds 8       # the VAE decoder alone, two random inits

Per stage (forward hooks on the shared modules, so both sides are timed alike): the text encoder, the
condition encoder (lyrics and timbre), the DiT's 8 steps, the VAE decode; end to end; peak resident memory
above the loaded weights (about 12 GB of float32 weights, built in memory, never written to disk). The
tokenizer is a byte-level BPE trained on the benchmark's own texts (the real Qwen3 tokenizer cannot be
downloaded here), so token counts are close to real ones. The VAE keeps diffusers' own initialisation
(build_vae: --vae shows why). --cpu adds the CPU path's forms (bfloat16; int8), run last, each built
beside the float32 modules. The XL models (4B DiT: 16 GB in float32 alone)
do not fit this machine's 24 GB beside everything else.

--dit --no-float32 --size xl-4b: the XL DiT (acestep-v15-xl-*, about 4B weights) in tunesmith's CPU forms
alone, each built by consuming a fresh float32 module (16 GB: it fits once, not beside a copy): step times.

--dit: the DiT alone (8 GB of float32 weights at 2B sizes), the 8 steps of tunesmith's sampling loop
(sample.sample) from the same noise, with random condition states as long as the benchmark's prompt and
lyrics make them: diffusers' float32 module against each variant (tunesmith's CPU DiT in bfloat16 or
int8, diffusers' module cast to bfloat16: the old CPU path), one variant at a time beside the float32
one (never more than the float32 weights and one reduced copy), runs interleaved. Per variant: the
median time of one step, and the SNR against float32 of the first step's DiT output (identical inputs)
and of the latents after the 8 steps.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import math
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch

from tunesmith.generation import pin_threads

from .bench import PeakMemory
from .common import hardware, report

PROMPT = "upbeat indie pop, female vocals, jangly guitars, bright drums, 120 bpm"
LYRICS = """[verse]
Morning comes through the window pane, coffee cold and the streets all rain
I keep your number on a folded page, singing softly to an empty stage
[chorus]
Oh we run, we run, through the city lights, every heartbeat burning bright tonight
Oh we run, we run, till the morning comes, singing louder than the drums
[verse]
Paper planes from the balcony, every one of them a melody"""
SIZES = {
    "turbo-2b": dict(
        transformer=dict(),  # AceStepTransformer1DModel's defaults are the 2B turbo's
        text_encoder=dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                          num_key_value_heads=8, head_dim=128, vocab_size=151669, max_position_embeddings=32768),
        condition_encoder=dict(),  # AceStepConditionEncoder's defaults likewise
        vae=dict(encoder_hidden_size=128, decoder_channels=128, channel_multiples=[1, 2, 4, 8, 16])),
    "xl-4b": dict(  # acestep-v15-xl-*: the DiT wider and deeper, conditions of 2048 projected to its width
        transformer=dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=128, encoder_hidden_size=2048),
        text_encoder=dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                          num_key_value_heads=8, head_dim=128, vocab_size=151669, max_position_embeddings=32768),
        condition_encoder=dict(),  # as the 2B's
        vae=dict(encoder_hidden_size=128, decoder_channels=128, channel_multiples=[1, 2, 4, 8, 16])),
    "tiny": dict(  # the tests' sizes: checks that the benchmark runs, no speed claims
        transformer=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=8, in_channels=24, audio_acoustic_hidden_dim=8,
                         sliding_window=16),
        text_encoder=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=4, vocab_size=2048, max_position_embeddings=1024),
        condition_encoder=dict(hidden_size=32, intermediate_size=64, text_hidden_dim=16, timbre_hidden_dim=8,
                               num_lyric_encoder_hidden_layers=2, num_timbre_encoder_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=16),
        vae=dict(encoder_hidden_size=4, decoder_channels=2, channel_multiples=[1, 1, 2, 2, 2])),
}


def tokenizer_for(texts: list[str]):
    """A byte-level BPE trained on `texts` (about one token a word, as Qwen3's on English)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|endoftext|>")


def _randomize(module: torch.nn.Module, seed: int):
    """Weights of sensible scale without torch's slow default initialisation: normal / sqrt(fan in) for
    matrices and kernels, ones for norm weights, small values elsewhere (drawn where the module lives)."""
    gen = torch.Generator(next(module.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                p.normal_(0, 1.0 / (p[0].numel() ** 0.5), generator=gen)
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.normal_(0, 0.02, generator=gen)
        for name, b in module.named_buffers():
            if b.is_floating_point():
                b.normal_(0, 0.1, generator=gen)
    return module.eval()


def build(size: str, device: str = "cpu"):
    """-> (AceStepParts, AceStepPipeline) sharing every module, float32 on `device` (a GPU draws the random
    weights itself: minutes of CPU time at 2B sizes)."""
    from diffusers import AceStepPipeline, FlowMatchEulerDiscreteScheduler
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step import AceStepConditionEncoder
    from transformers import Qwen3Config, Qwen3Model

    from tunesmith.acestep.parts import TURBO_STEPS, AceStepConfig, AceStepParts
    from tunesmith.acestep.prompt import caption_text, lyrics_text

    s = SIZES[size]
    with torch.device("meta"):
        transformer = AceStepTransformer1DModel(**s["transformer"], is_turbo=True, model_version="turbo")
        text_encoder = Qwen3Model(Qwen3Config(**s["text_encoder"]))
        condition = AceStepConditionEncoder(**s["condition_encoder"])
    for i, m in enumerate((transformer, text_encoder, condition)):
        m.to_empty(device=device)
        _randomize(m, i)
    with torch.device(device):
        vae = build_vae(size, "module")
        text_encoder.rotary_emb = type(text_encoder.rotary_emb)(config=text_encoder.config)  # its buffers, computed
    tokenizer = tokenizer_for([caption_text(PROMPT, 30), lyrics_text(LYRICS, "en")] * 4)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0)
    config = AceStepConfig(sample_rate=48000, hop=1920, audio_channels=2,
                           latent_dim=transformer.config.audio_acoustic_hidden_dim, turbo=True, steps=TURBO_STEPS,
                           cfg=1.0)
    parts = AceStepParts(config, tokenizer, text_encoder, condition, transformer, vae, scheduler)
    pipe = AceStepPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
                           condition_encoder=condition, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return parts, pipe


def build_vae(size: str, init: str):
    """The Oobleck VAE at `size`, float32: init "module" is diffusers' own initialisation (a decoder that
    maps nearby latents to nearby audio, as a trained VAE must: its training decodes sampled latents),
    "normal" _randomize's (normal / sqrt(fan in): a chaotic decoder whose output peaks near 140 and
    turns latents 60 dB clean into audio 28 dB clean; `--vae` measures both)."""
    from diffusers import AutoencoderOobleck

    s = SIZES[size]
    latent_dim = s["transformer"].get("audio_acoustic_hidden_dim", 64)
    torch.manual_seed(3)  # diffusers' own initialisation draws from torch's generator
    vae = AutoencoderOobleck(downsampling_ratios=[2, 4, 4, 6, 10], audio_channels=2, sampling_rate=48000,
                             decoder_input_channels=latent_dim, **s["vae"])
    return vae.eval() if init == "module" else _randomize(vae, 3)


class StageTimer:
    """Wall seconds spent in each module's forward (hooks), summed over a run."""

    def __init__(self, modules: dict[str, torch.nn.Module]):
        self.seconds = {name: 0.0 for name in modules}
        self._start = {}
        for name, module in modules.items():
            module.register_forward_pre_hook(lambda *_, n=name: self._start.__setitem__(n, time.perf_counter()))
            module.register_forward_hook(lambda *_, n=name: self._stop(n))

    def _stop(self, name: str):
        self.seconds[name] += time.perf_counter() - self._start.pop(name)

    def reset(self) -> dict[str, float]:
        out, self.seconds = self.seconds, {name: 0.0 for name in self.seconds}
        return out


CPU_VARIANTS = {  # --cpu: name -> (row label, quantize)
    "bfloat16": ("tunesmith, CPU path (`dtype=\"bfloat16\"`: acestep/cpu.py's DiT, bfloat16 decoder)", None),
    "int8": ("tunesmith, CPU path with `quantize=\"int8\"` (int8 DiT and decoder products)", "int8"),
}
DIT_VARIANTS = {  # --dit: name -> (row label, how it is made from diffusers' float32 module)
    "bfloat16": ("tunesmith CPU DiT, bfloat16 (`dtype=\"bfloat16\"`, acestep/cpu.py)", "bfloat16"),
    "bfloat16-loaded": ("tunesmith CPU DiT, bfloat16, built from the DiT read in bfloat16 (as `tunesmith.load` "
                        "reads it)", "loaded"),
    "int8": ("tunesmith CPU DiT, dynamic int8 (`prepare_dit(..., quantize=\"int8\")`)", "int8"),
    "diffusers-bfloat16": ("diffusers' module cast to bfloat16 (the old CPU path)", "cast"),
}


def build_dit(size: str):
    """diffusers' AceStepTransformer1DModel at `size`, random weights, float32."""
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel

    with torch.device("meta"):
        dit = AceStepTransformer1DModel(**SIZES[size]["transformer"], is_turbo=True, model_version="turbo")
    dit.to_empty(device="cpu")
    return _randomize(dit, 0)


def reduced_dit(dit, how: str):
    """A variant of the float32 module: tunesmith's CPU DiT, or diffusers' module in bfloat16, built
    beside the float32 one without a second float32 copy."""
    from tunesmith.acestep.cpu import prepare_dit

    if how not in ("cast", "loaded"):
        return prepare_dit(dit, torch.bfloat16, "int8" if how == "int8" else None)
    with torch.device("meta"):
        cast = type(dit).from_config(dit.config).to(torch.bfloat16)
    cast.to_empty(device="cpu")
    cast.load_state_dict(dit.state_dict())  # rounded to bfloat16, tensor by tensor
    return cast.eval() if how == "cast" else prepare_dit(cast, torch.bfloat16, consume=True)


def dit_inputs(dit, seconds: float) -> dict:
    """The noise of seed 0, a context of silence-like latents and the all-ones mask, and random
    condition states as long as the condition encoder makes them for PROMPT and LYRICS (caption tokens
    + lyric tokens + one timbre token)."""
    from tunesmith.acestep.prompt import caption_text, lyrics_text
    from tunesmith.diffusion.noise import row_noise, seeded_generators

    c = dit.config
    frames = math.ceil(seconds * 25)  # 48 kHz / 1920 samples a latent frame
    tokenizer = tokenizer_for([caption_text(PROMPT, seconds), lyrics_text(LYRICS, "en")] * 4)
    length = sum(len(tokenizer(text).input_ids) for text in (caption_text(PROMPT, seconds),
                                                             lyrics_text(LYRICS, "en"))) + 1
    gen = torch.Generator().manual_seed(1)
    states = torch.randn(1, length, c.encoder_hidden_size or c.hidden_size, generator=gen)
    silence = 0.1 * torch.randn(1, frames, c.audio_acoustic_hidden_dim, generator=gen)
    return dict(noise=row_noise(seeded_generators([0]), (frames, c.audio_acoustic_hidden_dim)), states=states,
                context=torch.cat([silence, torch.ones_like(silence)], dim=-1))


class _FirstOutput:
    """The DiT as sample() calls it, keeping its first output (the velocity at the noise)."""

    def __init__(self, dit):
        self.dit, self.first = dit, None

    @property
    def dtype(self):
        return self.dit.dtype

    def __call__(self, **kwargs):
        out = self.dit(**kwargs)
        if self.first is None:
            self.first = out[0].float().clone()
        return out


def run_steps(dit, inputs: dict, steps: int):
    """tunesmith's sampling loop (turbo: no guidance) -> (latents, seconds of each step, first output)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from tunesmith.acestep.sample import sample

    recorder = _FirstOutput(dit)
    parts = SimpleNamespace(transformer=recorder, condition_encoder=None,
                            scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0))
    stamps = [time.perf_counter()]
    with torch.inference_mode():
        latents = sample(parts, inputs["noise"], inputs["states"], inputs["context"].to(dit.dtype), steps, 1.0,
                         lambda _: stamps.append(time.perf_counter()))
    return latents, [b - a for a, b in zip(stamps, stamps[1:])], recorder.first


def _snr(reference: torch.Tensor, x: torch.Tensor) -> float:
    reference, x = reference.double(), x.double()
    return 10 * math.log10(reference.pow(2).sum().item() / (reference - x).pow(2).sum().item())


def dit_alone_main(args):
    """--dit --no-float32: each variant's step time alone, each built by consuming a fresh float32 module
    (the XL DiT's 16 GB of float32 weights fit this machine once, not beside a copy)."""
    from tunesmith.acestep.cpu import prepare_dit

    steps, rows, config, tokens = 8, {}, None, 0
    for variant in args.variants.split(","):
        label, how = DIT_VARIANTS[variant]
        if how == "cast":
            raise SystemExit("--no-float32 times tunesmith's CPU DiT only (bfloat16, int8)")
        started = time.perf_counter()
        dit = build_dit(args.size)
        config, inputs = dit.config, dit_inputs(dit, args.seconds)
        model = prepare_dit(dit, torch.bfloat16, "int8" if how == "int8" else None, consume=True)
        del dit
        gc.collect()
        print(f"{label}: built in {time.perf_counter() - started:.0f} s", flush=True)
        run_steps(model, inputs, 1)  # warm-up
        seconds = []
        for _ in range(args.runs):
            seconds += run_steps(model, inputs, steps)[1]
            print(f"{label}: {steps} steps in {sum(seconds[-steps:]):.1f} s", flush=True)
        rows[label], tokens, frames = seconds, inputs["states"].shape[1], inputs["noise"].shape[1]
        del model, inputs
        gc.collect()
    lines = [f"### ACE-Step 1.5 turbo DiT ({args.size}), {args.seconds:g} s of song ({frames} latent frames), "
             f"{steps} steps, tunesmith's CPU DiT alone ({datetime.date.today().isoformat()})", "",
             f"Hardware: {hardware()}. Command: `python -m benchmarks.acestep_cpu --dit --no-float32 --size "
             f"{args.size} --seconds {args.seconds:g} --runs {args.runs} --variants {args.variants}`. "
             f"{config.num_hidden_layers} layers of width {config.hidden_size}, {tokens} condition tokens, random "
             "weights; no float32 reference (it does not fit beside a copy). A step's time is the median over "
             "the steps of all runs; the first step includes the cross-attention keys and values.", "",
             f"| | one DiT step (s) | first step (s) | {steps} steps (s) |", "| --- | ---: | ---: | ---: |"]
    for label, seconds in rows.items():
        lines.append(f"| {label} | {statistics.median(seconds):.2f} | {seconds[0]:.2f} | "
                     f"{sum(seconds) / args.runs:.2f} |")
    report("\n".join(lines) + "\n", args.markdown)


def dit_main(args):
    """--dit: see the module's docstring."""
    if args.no_float32:
        return dit_alone_main(args)
    started = time.perf_counter()
    reference = build_dit(args.size)
    inputs = dit_inputs(reference, args.seconds)
    steps = 8
    print(f"built in {time.perf_counter() - started:.0f} s; condition tokens: {inputs['states'].shape[1]}",
          flush=True)
    base = "diffusers float32 (`AceStepPipeline`'s exact path)"
    rows = {base: dict(steps=[])}
    exact = None
    run_steps(reference, inputs, 1)  # warm-up: oneDNN's primitives, first-touch pages
    for variant in args.variants.split(","):
        label, how = DIT_VARIANTS[variant]
        model = reduced_dit(reference, how)
        run_steps(model, inputs, 1)
        phase = {base: [], label: []}
        for _ in range(args.runs):
            for name, dit in ((base, reference), (label, model)):
                latents, seconds, first = run_steps(dit, inputs, steps)
                phase[name] += seconds
                print(f"{name}: {steps} steps in {sum(seconds):.1f} s", flush=True)
                if name == base:
                    exact = exact or (latents, first)
                else:
                    rows[label] = dict(steps=seconds if label not in rows else rows[label]["steps"] + seconds,
                                       first=_snr(exact[1], first), latents=_snr(exact[0], latents))
        rows[base]["steps"] += phase[base]
        rows[label]["speedup"] = statistics.median(phase[base]) / statistics.median(phase[label])
        del model
        gc.collect()
    date = datetime.date.today().isoformat()
    c = reference.config
    frames = inputs["noise"].shape[1]
    lines = [f"### ACE-Step 1.5 turbo DiT ({args.size}), {args.seconds:g} s of song ({frames} latent frames), "
             f"{steps} steps ({date})", "",
             f"Hardware: {hardware()}. Command: `python -m benchmarks.acestep_cpu --dit --size {args.size} "
             f"--seconds {args.seconds:g} --runs {args.runs} --variants {args.variants}`. {c.num_hidden_layers} "
             f"layers of width {c.hidden_size}, {inputs['states'].shape[1]} condition tokens, random weights. "
             f"Each variant beside diffusers' float32 module, {args.runs} interleaved run(s) of {steps} steps "
             "each; a step's time is the median over the steps of all runs.", "",
             "| | one DiT step (s) | speed vs float32 (same phase) | SNR, first step's output (dB) | "
             f"SNR, latents after {steps} steps (dB) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, row in rows.items():
        if name == base:
            lines.append(f"| {name} | {statistics.median(row['steps']):.2f} | 1.00x | exact | exact |")
        else:
            lines.append(f"| {name} | {statistics.median(row['steps']):.2f} | {row['speedup']:.2f}x | "
                         f"{row['first']:.1f} | {row['latents']:.1f} |")
    report("\n".join(lines) + "\n", args.markdown)


VAE_INITS = {"module": "diffusers' own initialisation", "normal": "normal, 1 / sqrt(fan in)"}


def vae_main(args):
    """--vae: the decoder of each random VAE (VAE_INITS) on the same random unit latents: how far the
    float32 audio moves when the latents get noise 60 dB below them (the decoder's own sensitivity, whatever
    the arithmetic), and the SNR and time of tunesmith's CPU decoder in bfloat16 and int8 against
    diffusers' float32 decode: of the whole output, and of the part the latents make (the output less the
    decode of zero latents: most of a randomly initialised decoder's output is its biases')."""
    from tunesmith.diffusion.oobleck import OobleckDecoderCPU

    frames = math.ceil(args.seconds * 25)
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(1, SIZES[args.size]["transformer"].get("audio_acoustic_hidden_dim", 64), frames,
                          generator=gen)
    noisy = latents + 1e-3 * torch.randn(latents.shape, generator=gen)
    lines = [f"### ACE-Step's VAE decoder ({args.size}), {args.seconds:g} s of random latents "
             f"({datetime.date.today().isoformat()})", "",
             f"Hardware: {hardware()}. Command: `python -m benchmarks.acestep_cpu --vae --size {args.size} "
             f"--seconds {args.seconds:g}`. SNRs against diffusers' float32 decode of the same latents, of the "
             "whole output / of the part the latents make (the output less the decode of zero latents); "
             "times of one decode after a warm-up.", "",
             "| random weights | output peak | part the latents make (dB of the output) | audio SNR, latents 60 dB "
             "clean | bfloat16: SNR (dB) | bfloat16 (s) | int8: SNR (dB) | int8 (s) | diffusers float32 (s) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for init, label in VAE_INITS.items():
        decoder = build_vae(args.size, init).decoder
        with torch.inference_mode():
            start = time.perf_counter()
            exact = decoder(latents)
            seconds = {"float32": time.perf_counter() - start}
            moved, made = decoder(noisy), exact - decoder(torch.zeros_like(latents))
            snr = {}
            for form, quantize in (("bfloat16", None), ("int8", "int8")):
                ours = OobleckDecoderCPU(decoder, torch.bfloat16, quantize=quantize)
                ours(latents[:, :, :30])
                start = time.perf_counter()
                audio = ours(latents)
                seconds[form] = time.perf_counter() - start
                snr[form] = f"{_snr(exact, audio):.1f} / {_snr(made, made - exact + audio):.1f}"
        print(label, seconds, snr, flush=True)
        lines.append(f"| {label} | {exact.abs().max():.2f} | {10 * math.log10(made.double().pow(2).sum() / exact.double().pow(2).sum()):.1f} | {_snr(exact, moved):.1f} | "
                     f"{snr['bfloat16']} | {seconds['bfloat16']:.2f} | {snr['int8']} | {seconds['int8']:.2f} | "
                     f"{seconds['float32']:.2f} |")
    report("\n".join(lines) + "\n", args.markdown)


def main(argv=None):
    from tunesmith.acestep.model import AceStep

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="turbo-2b", choices=list(SIZES))
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--cpu", default=None, help=f"also the CPU path's forms, last: a comma list of "
                        f"{', '.join(CPU_VARIANTS)}")
    parser.add_argument("--vae", action="store_true", help="the VAE decoder alone: its sensitivity and SNR per "
                        "form, for two random initialisations")
    parser.add_argument("--dit", action="store_true", help="the DiT alone: one step's time and SNR per variant")
    parser.add_argument("--variants", default=",".join(DIT_VARIANTS), help="with --dit: which, in order")
    parser.add_argument("--no-float32", action="store_true", help="with --dit: the variants' times alone, without "
                        "the float32 reference (for the XL DiT, which does not fit twice)")
    parser.add_argument("--markdown", default=None, help="append the table to this file")
    args = parser.parse_args(argv)
    pin_threads(torch.get_num_threads())  # both sides on the same threads: no per-call back-off
    if args.dit:
        return dit_main(args)
    if args.vae:
        return vae_main(args)
    started = time.perf_counter()
    parts, pipe = build(args.size)
    print(f"built in {time.perf_counter() - started:.0f} s", flush=True)
    model = AceStep(parts, f"random {args.size}", torch.device("cpu"), torch.float32)
    timer = StageTimer({"text encoder": parts.text_encoder, "condition encoder": parts.condition_encoder,
                        "DiT": parts.transformer, "VAE decode": parts.vae.decoder})
    sides = {
        "tunesmith (AceStep.generate)": lambda: model.generate(PROMPT, lyrics=LYRICS, duration=args.seconds,
                                                                seed=0)[0].audio,
        "diffusers (AceStepPipeline)": lambda: pipe(PROMPT, lyrics=LYRICS, audio_duration=args.seconds,
                                                    num_inference_steps=8,
                                                    generator=torch.Generator().manual_seed(0)).audios[0].numpy(),
    }
    with torch.inference_mode():  # warm-up: oneDNN's primitives, first-touch pages
        model.generate(PROMPT, lyrics=LYRICS, duration=10, seed=0, steps=1)
        pipe(PROMPT, lyrics=LYRICS, audio_duration=10, num_inference_steps=1)
    results = {name: [] for name in sides}
    audio = {}
    for _ in range(args.runs):
        for name, run in sides.items():
            timer.reset()
            with torch.inference_mode(), PeakMemory(torch.device("cpu")) as peak:
                start = time.perf_counter()
                audio[name] = run()
                total = time.perf_counter() - start
            results[name].append((total, timer.reset(), peak.extra_mb))
            print(name, f"{total:.1f} s", flush=True)
    ours, theirs = audio.values()
    diff = float(np.abs(ours - theirs[:, :ours.shape[1]]).max())
    for variant in [v for v in (args.cpu or "").split(",") if v]:  # last: the CPU path's forms, one at a time
        from tunesmith.acestep.cpu import prepare_dit
        from tunesmith.diffusion.oobleck import OobleckDecoderCPU

        name, quantize = CPU_VARIANTS[variant]
        fast_parts = copy.copy(parts)  # as for_cpu does, but the diffusers DiT left whole for the next variant
        fast_parts.transformer = prepare_dit(parts.transformer, torch.bfloat16, quantize)
        fast_parts.decoder = OobleckDecoderCPU(parts.vae.decoder, torch.bfloat16, quantize=quantize)
        fast = AceStep(fast_parts, f"random {args.size}", torch.device("cpu"), torch.bfloat16, quantize)
        results[name] = []
        with torch.inference_mode():
            fast.generate(PROMPT, lyrics=LYRICS, duration=10, seed=0, steps=1)
        for _ in range(args.runs):
            timer.reset()
            with torch.inference_mode(), PeakMemory(torch.device("cpu")) as peak:
                start = time.perf_counter()
                clip = fast.generate(PROMPT, lyrics=LYRICS, duration=args.seconds, seed=0)[0]
                total = time.perf_counter() - start
            audio[name] = clip.audio
            stage = timer.reset()
            stage["DiT"] = clip.timings["dit"]  # the CPU DiT and decoder are not the hooked modules
            stage["VAE decode"] = clip.timings["vae"]
            results[name].append((total, stage, peak.extra_mb))
            print(name, f"{total:.1f} s", flush=True)
        del fast, fast_parts
        gc.collect()
    snr = {}
    for name, a in audio.items():
        error = float(((ours - a[:, :ours.shape[1]]).astype(np.float64) ** 2).sum())
        if a is not ours:
            snr[name] = "exact" if error == 0 else f"{10 * np.log10((ours.astype(np.float64) ** 2).sum() / error):.1f}"
    date = datetime.date.today().isoformat()
    lines = [f"### ACE-Step 1.5 turbo ({args.size}), {args.seconds:g} s of song, 8 steps, float32 ({date})", "",
             f"Hardware: {hardware()}. Command: `python -m benchmarks.acestep_cpu --size {args.size} --seconds "
             f"{args.seconds:g} --runs {args.runs}{f' --cpu {args.cpu}' if args.cpu else ''}`. Median of {args.runs} run(s), random weights; both sides run "
             f"the same modules. Largest difference between the two songs: {diff:.1e}.", "",
             "| | text encoder (s) | condition encoder (s) | DiT, 8 steps (s) | VAE decode (s) | end to end (s) | "
             "real-time factor | peak extra MB | SNR vs tunesmith float32 (dB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, runs in results.items():
        total = statistics.median(r[0] for r in runs)
        stage = {k: statistics.median(r[1][k] for r in runs) for k in runs[0][1]}
        peak = max(r[2] for r in runs)
        lines.append(f"| {name} | {stage['text encoder']:.2f} | {stage['condition encoder']:.2f} | "
                     f"{stage['DiT']:.2f} | {stage['VAE decode']:.2f} | {total:.2f} | {args.seconds / total:.2f}x | "
                     f"{peak:.0f} | {snr.get(name, '')} |")
    report("\n".join(lines) + "\n", args.markdown)


if __name__ == "__main__":
    main()
