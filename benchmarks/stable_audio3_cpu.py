"""Stable Audio 3 Small or Medium on the CPU: tunesmith's CPU forms (stable_audio3/cpu.py) beside the plain
float32 modules they replace, on the same random weights at the real sizes, in one process, runs interleaved.

    python -m benchmarks.stable_audio3_cpu                              # Small, 30 s, 8 ping-pong steps
    python -m benchmarks.stable_audio3_cpu --seconds 120 --variants int8
    python -m benchmarks.stable_audio3_cpu --variants bf16 --probe       # 1 step + 1 window, extrapolated
    python -m benchmarks.stable_audio3_cpu --size medium --variants int8-same --probe   # 1.4B DiT, SAME-L

Each run: T5Gemma over 256 tokens (the same float32 module on every side: the CPU path leaves it as it
is and runs it once per prompt), the DiT steps (ping-pong at guidance 1: one forward of batch 1 a step),
then SAME-S (Medium: SAME-L) decoding the latents in windows of 128 (decode.py). The reference is diffusers'
StableAudio3DiTModel and tunesmith's float32 SAME-S (diffusers has no SAME-S; Medium: diffusers'
AutoencoderSAME at SAME-L's sizes), float32, as they are; only the autoencoders' decoders are built.
Prints each stage's time, the speed-up over the reference, the peak resident memory a run adds, and the
SNR (dB) of each variant's DiT output (step 1), decode (of the reference's latents) and final audio
against the reference's on the same inputs and noise. --probe times one DiT step and one interior decode
window (128 latents and a margin each side) of every side, each side decoding the reference's latents,
and extrapolates (for forms and sizes too slow on this CPU to run whole): an upper bound, as the windows at
the clip's ends have one margin only.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import math
import resource
import time
from dataclasses import dataclass, field

import torch

from tunesmith.generation import pin_threads

from .bench import PeakMemory
from .common import hardware, report

# T5Gemma's encoder, the same for Small and Medium (Stability's), and the test suite's
T5_REAL = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
               num_key_value_heads=12, head_dim=64, vocab_size=32000, sliding_window=4096)
T5_TINY = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
               num_key_value_heads=1, head_dim=8, vocab_size=64, sliding_window=8)

SIZES = {
    # Stable Audio 3 Small (stabilityai/stable-audio-3-small-music): a 433M DiT 1024 wide, 20 blocks, 16 heads,
    # plain attention, 64 memory tokens; SAME-S 768 wide (128 channels x 6), 6 layers of 64-wide heads, 16
    # frames of 256 samples per latent, chunks of 2 latents with the midpoint shift, 3-tap output mapping;
    # T5Gemma-b's encoder (768 wide, 12 layers; a smaller vocabulary: the lookup costs nothing).
    "small": dict(dit=dict(io_channels=256, embed_dim=1024, depth=20, num_heads=16, cond_token_dim=768,
                           global_cond_dim=768, local_add_cond_dim=257, timestep_features_dim=256, ff_mult=4.0,
                           num_memory_tokens=64, use_differential_attention=False),
                  same=dict(audio_channels=2, patch_size=256, width=768, stride=16, depth=6, latent_dim=256,
                            dim_heads=64, ff_mult=3, chunk_size=32),
                  t5=T5_REAL, tokens=256, sample_rate=44100),
    # The test suite's: checks that the benchmark runs end to end, not speed.
    "tiny": dict(dit=dict(io_channels=8, embed_dim=32, depth=2, num_heads=2, cond_token_dim=16, global_cond_dim=16,
                          local_add_cond_dim=9, timestep_features_dim=16, ff_mult=2, num_memory_tokens=4,
                          use_differential_attention=False),
                 same=dict(audio_channels=2, patch_size=8, width=32, stride=4, depth=4, latent_dim=8, dim_heads=8,
                           ff_mult=2, chunk_size=8),
                 t5=T5_TINY, tokens=16, sample_rate=4096),
    # Stable Audio 3 Medium (stabilityai/stable-audio-3-medium, 1.4B): diffusers' StableAudio3DiTModel defaults
    # (1536 wide, 24 blocks of 24 heads, differential attention, 64 memory tokens), as Stability's own port
    # (optimized/mlx/models/defs/dit_mlx_medium.py); SAME-L as diffusers' AutoencoderSAME docstring loads it
    # (256 channels x 6 = 1536 wide, 12 layers of 24 64-wide heads, ff_mult 3, a band of one latent each way,
    # decoder_sinusoidal_blocks 8: sin gates on layers 5-11), as Stability's port (same_l_decoder.py).
    "medium": dict(dit=dict(io_channels=256, embed_dim=1536, depth=24, num_heads=24, cond_token_dim=768,
                            global_cond_dim=768, local_add_cond_dim=257, timestep_features_dim=256, ff_mult=4.0,
                            num_memory_tokens=64, use_differential_attention=True),
                   same_l=dict(audio_channels=2, patch_size=256, encoder_channels=256, encoder_c_mults=(6,),
                               encoder_strides=(16,), encoder_transformer_depths=(12,), latent_dim=256, dim_heads=64,
                               ff_mult=3, sliding_window=1, decoder_sinusoidal_blocks=(8,)),
                   t5=T5_REAL, tokens=256, sample_rate=44100),
    # The test suite's Medium: differential attention and diffusers' band-attention SAME.
    "tiny-medium": dict(dit=dict(io_channels=8, embed_dim=32, depth=2, num_heads=2, cond_token_dim=16,
                                 global_cond_dim=16, local_add_cond_dim=9, timestep_features_dim=16, ff_mult=2,
                                 num_memory_tokens=4, use_differential_attention=True),
                        same_l=dict(audio_channels=2, patch_size=8, encoder_channels=8, encoder_c_mults=(2,),
                                    encoder_strides=(4,), encoder_transformer_depths=(2,), latent_dim=8, dim_heads=8,
                                    ff_mult=2, decoder_sinusoidal_blocks=(1,)),
                        t5=T5_TINY, tokens=16, sample_rate=4096),
}
# name -> (row label, DiT dtype, DiT quantize, SAME decoder dtype, SAME decoder quantize); None: the float32
# modules as they are
VARIANTS = {"reference": ("float32 modules (diffusers DiT, {same})", None, None, None, None),
            "float32": ("tunesmith float32 (CPU forms)", torch.float32, None, torch.float32, None),
            "int8": ("tunesmith int8 DiT, float32 SAME", torch.float32, "int8", torch.float32, None),
            "int8-same": ("tunesmith int8 DiT, int8 SAME", torch.float32, "int8", torch.float32, "int8"),
            "bf16": ("tunesmith bf16 DiT, bf16 SAME", torch.bfloat16, None, torch.bfloat16, None),
            "int8-bf16": ("tunesmith int8 DiT, bf16 SAME", torch.bfloat16, "int8", torch.bfloat16, None)}
STEPS = 8
LOGSNR = (-6.2, 2.0)


def build(size: str, decoder_only: bool = False, fold: bool = True):
    """Random parts at the size's shapes, the modules' own initialisation: (T5Gemma encoder, DiT, SAME-S or
    SAME-L); decoder_only: the autoencoder's encoder dropped (the benchmark only decodes: SAME-L's is 1.7 GB);
    fold: SAME-L's weight norms folded (not for a folder that AutoencoderSAME.from_pretrained reads back)."""
    from diffusers import AutoencoderSAME, StableAudio3DiTModel
    from transformers import T5GemmaConfig, T5GemmaEncoderModel
    from transformers.models.t5gemma.configuration_t5gemma import T5GemmaModuleConfig

    from tunesmith.stable_audio3.same_s import AutoencoderSAMES, SAMESConfig

    spec = SIZES[size]
    torch.manual_seed(0)
    module = T5GemmaModuleConfig(**spec["t5"])
    t5 = T5GemmaEncoderModel(T5GemmaConfig(encoder=module.to_dict(), decoder=module.to_dict(),
                                           vocab_size=spec["t5"]["vocab_size"], is_encoder_decoder=False)).eval()
    dit = StableAudio3DiTModel(**spec["dit"]).eval()
    if "same_l" in spec:
        vae = AutoencoderSAME(**spec["same_l"], sampling_rate=spec["sample_rate"]).eval()
        if decoder_only:
            vae.encoder = None
    else:
        vae = AutoencoderSAMES(SAMESConfig(**spec["same"], sample_rate=spec["sample_rate"])).eval()
        if decoder_only:
            vae.encoder_block = vae.encoder_proj = None
    with torch.no_grad():  # zero-initialised output projections would make the decoder's layers no-ops
        for p in vae.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape) / math.sqrt(p.shape[-1]))
    for m in vae.modules() if fold else ():  # SAME-L's weight-normed convolutions folded (g v / |v|): copies
        if hasattr(m, "weight_g"):  # can then be made
            torch.nn.utils.remove_weight_norm(m)
    for m in (t5, dit, vae):
        m.requires_grad_(False)
    return t5, dit, vae


@dataclass
class Run:
    text: float
    steps: list[float]
    decode: float
    extra_mb: float
    first: torch.Tensor  # the DiT's step-1 output
    latents: torch.Tensor
    audio: torch.Tensor | None  # None when probed
    decoded_ref: torch.Tensor | None = None  # its decode of the reference's latents (probed: one window; for SNR)
    extrapolated: bool = False
    windows: int = 1

    @property
    def dit(self) -> float:
        return sum(self.steps) if not self.extrapolated else self.steps[0] * STEPS

    @property
    def total(self) -> float:
        return self.text + self.dit + self.decode


@dataclass
class Engine:
    name: str
    label: str
    t5: object
    dit: object
    vae: object
    runs: list = field(default_factory=list)


def engines(names: list[str], t5, dit, vae) -> list[Engine]:
    from tunesmith.stable_audio3.cpu import DiTCPU, prepare_decoder

    out = []
    for name in names:
        label, dt, quantize, vae_dtype, vae_quantize = VARIANTS[name]
        if dt is None:
            out.append(Engine(name, label, t5, dit, vae))
        else:
            out.append(Engine(name, label, t5, DiTCPU(dit, dt, quantize).eval(),
                              prepare_decoder(copy.deepcopy(vae), vae_dtype, vae_quantize)))
    return out


def hop_of(spec: dict) -> int:
    same = spec.get("same_l") or spec["same"]
    strides = same.get("encoder_strides") or (same["stride"],)
    return same["patch_size"] * math.prod(strides)


def inputs(size: str, seconds: float, seed: int = 1) -> dict:
    spec = SIZES[size]
    g = torch.Generator().manual_seed(seed)
    hop = hop_of(spec)
    latents = -(-math.ceil(seconds * spec["sample_rate"] / hop) // 2) * 2
    C, D = spec["dit"]["io_channels"], spec["dit"]["cond_token_dim"]
    T = spec["tokens"]
    ids = torch.zeros(1, T, dtype=torch.long)
    n = min(24, T)  # a prompt of some 20 words
    ids[0, :n] = torch.randint(3, spec["t5"]["vocab_size"], (n,), generator=g)
    mask = (torch.arange(T) < n).long()[None]
    t = torch.linspace(1, 0, STEPS + 1)
    levels = torch.sigmoid(-(LOGSNR[1] - t * (LOGSNR[1] - LOGSNR[0])))
    levels[0], levels[-1] = 1.0, 0.0
    return dict(ids=ids, mask=mask, seconds=torch.randn(1, D, generator=g), samples=latents * hop,
                noise=[torch.randn(1, C, latents, generator=g) for _ in range(STEPS + 1)], levels=levels)


@torch.inference_mode()
def run(engine: Engine, x: dict, probe: bool, reference_latents: torch.Tensor | None) -> Run:
    from tunesmith.stable_audio3.decode import WINDOW_LATENTS, decode, margin_and_alignment, window_count

    with PeakMemory(torch.device("cpu")) as peak:
        start = time.perf_counter()
        states = engine.t5(x["ids"], attention_mask=x["mask"])[0].float()  # [1, 256, D]
        context = torch.cat([states, x["seconds"][:, None]], dim=1)  # the seconds as one more token
        context_mask = torch.cat([x["mask"], x["mask"].new_ones(1, 1)], dim=1)
        text = time.perf_counter() - start
        latents, steps, first = x["noise"][0], [], None
        for i in range(STEPS):
            t, t_next = x["levels"][i], x["levels"][i + 1]
            start = time.perf_counter()
            v = engine.dit(latents, t.expand(1), encoder_hidden_states=context, global_hidden_states=x["seconds"],
                           encoder_attention_mask=context_mask, return_dict=False)[0].float()
            steps.append(time.perf_counter() - start)
            first = v if first is None else first
            latents = (1 - t_next) * (latents - t * v) + t_next * x["noise"][i + 1]
            if probe:
                break
        windows = window_count(latents.shape[2], engine.vae)
        start = time.perf_counter()
        if probe:  # an interior window (128 latents, a margin each side) of the reference's latents, times the windows
            source = latents if reference_latents is None else reference_latents
            part = source[:, :, :min(source.shape[2], WINDOW_LATENTS + 2 * margin_and_alignment(engine.vae)[0])]
            audio = None
            decoded_ref = engine.vae.decode(part).sample.float()
            decoding = (time.perf_counter() - start) * windows
        else:
            audio = decode(engine.vae, latents, x["samples"])
            decoding = time.perf_counter() - start
    if reference_latents is not None and not probe:
        decoded_ref = audio if engine.name == "reference" else decode(engine.vae, reference_latents, x["samples"])
    elif not probe:
        decoded_ref = audio
    return Run(text, steps, decoding, peak.extra_mb, first, latents, audio, decoded_ref, probe, windows)


def held_mb(*objects) -> float:
    """Bytes of the tensors the engines hold (modules' parameters and buffers, the CPU forms' copies, packed
    int8 weights at their size), each tensor once."""
    seen, total = set(), 0

    def walk(value):
        nonlocal total
        if isinstance(value, torch.Tensor):
            if id(value) not in seen:
                seen.add(id(value))
                total += value.numel() * value.element_size()
        elif isinstance(value, torch.nn.Module):
            for t in list(value.parameters()) + list(value.buffers()):
                walk(t)
            for v in vars(value).values():
                if not isinstance(v, (dict, torch.nn.Module)):
                    walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif hasattr(value, "nbytes") and not isinstance(value, (int, float)):
            if id(value) not in seen:
                seen.add(id(value))
                total += value.nbytes
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            for v in vars(value).values():
                walk(v)

    for o in objects:
        walk(o)
    return total / 2**20


def snr_db(reference: torch.Tensor, x: torch.Tensor) -> float:
    error = (reference.double() - x.double()).pow(2).sum().item()
    return float("inf") if error == 0 else 10 * math.log10(reference.double().pow(2).sum().item() / error)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--variants", default="int8,float32", help=f"besides the reference: {', '.join(VARIANTS)}")
    parser.add_argument("--probe", action="store_true",
                        help="every side: one DiT step and one decode window, extrapolated")
    parser.add_argument("--no-reference", action="store_true", help="skip the float32 modules (no SNR, no ratio)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of audio of each side's untimed first run")
    parser.add_argument("--markdown", help="append the result table to this file")
    args = parser.parse_args(argv)
    pin_threads(torch.get_num_threads())  # both sides on the same threads: no per-call back-off
    names = ([] if args.no_reference else ["reference"]) + [v for v in args.variants.split(",") if v]
    for name in names:
        if name not in VARIANTS:
            parser.error(f"unknown variant {name!r}: {', '.join(VARIANTS)}")
    sides = engines(names, *build(args.size, decoder_only=True))  # no reference: the float32 DiT dropped here
    x = inputs(args.size, args.seconds)
    warm = inputs(args.size, args.warmup)
    for engine in sides:  # first calls (kernels built, oneDNN primitives made) are not timed
        run(engine, warm, args.probe, None)
    for _ in range(args.runs):
        for engine in sides:  # the reference first: the others decode its latents for the decoder's SNR
            reference = sides[0].runs[-1].latents if sides[0].name == "reference" and sides[0].runs else None
            engine.runs.append(run(engine, x, args.probe, reference))
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report(render(args, sides, x, peak_rss), args.markdown)


def command(args) -> str:
    words = [f"--size {args.size}" if args.size != "small" else "", f"--seconds {args.seconds:g}",
             f"--variants {args.variants}", "--probe" if args.probe else "",
             "--no-reference" if args.no_reference else "", f"--runs {args.runs}"]
    return " ".join(w for w in words if w)


def render(args, sides: list[Engine], x: dict, peak_rss: float) -> str:
    import statistics

    def med(fn, engine):
        return statistics.median(fn(r) for r in engine.runs)

    latents = x["noise"][0].shape[2]
    same = "SAME-L" if "same_l" in SIZES[args.size] else "SAME-S"
    for e in sides:
        e.label = e.label.format(same=same)
    lines = [f"### {args.size}, {args.seconds:g} s ({latents} latents), {STEPS} ping-pong steps, cfg 1, batch 1 "
             f"({datetime.date.today()})", "",
             f"Hardware: {hardware()}. Command: `python -m benchmarks.stable_audio3_cpu {command(args)}`. "
             f"Median of {args.runs} run(s), random weights. Peak resident memory of the process: {peak_rss:.0f} MB.",
             "", "| stage (s) | " + " | ".join(e.label + (" (probed)" if e.runs[0].extrapolated else "")
                                              for e in sides) + " |",
             "| --- |" + " ---: |" * len(sides)]

    def row(label, fn, fmt="{:.2f}"):
        lines.append(f"| {label} | " + " | ".join(fmt.format(med(fn, e)) for e in sides) + " |")

    row(f"text (T5Gemma, {x['ids'].shape[1]} tokens, once)", lambda r: r.text)
    row("DiT step 1", lambda r: r.steps[0])
    row(f"DiT, all {STEPS} steps", lambda r: r.dit)
    row(f"{same} decode ({sides[0].runs[0].windows} windows)", lambda r: r.decode)
    row("end to end", lambda r: r.total)
    row("x real time (audio s / wall s)", lambda r: args.seconds / r.total)
    if sides[0].name == "reference":
        ref = sides[0]
        lines.append("| speed-up over the float32 modules | " + " | ".join(
            f"{med(lambda r: r.total, ref) / med(lambda r: r.total, e):.1f}x" for e in sides) + " |")
    row("peak extra memory (MB)", lambda r: r.extra_mb, "{:.0f}")
    lines.append("| weights (MB) | " + " | ".join(f"{held_mb(e.t5, e.dit, e.vae):.0f}" for e in sides) + " |")
    if sides[0].name == "reference":
        ref = sides[0].runs[0]
        lines += ["", "SNR against the float32 modules (dB; same weights, inputs and noise):", "",
                  f"| variant | DiT output, step 1 | {same} decode of the same latents"
                  + (" (one window)" if ref.extrapolated else "") + " | final audio |",
                  "| --- | ---: | ---: | ---: |"]
        for e in sides[1:]:
            r = e.runs[0]
            decode_snr = "" if r.decoded_ref is None else f"{snr_db(ref.decoded_ref, r.decoded_ref):.1f}"
            final = "" if r.audio is None else f"{snr_db(ref.audio, r.audio):.1f}"
            lines.append(f"| {e.label} | {snr_db(ref.first, r.first):.1f} | {decode_snr} | {final} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
