"""Stable Audio Open on the CPU: tunesmith's levers (stable_audio/cpu.py) against the plain float32
diffusers / transformers modules, on the same random weights at the real sizes, in one process, runs
interleaved.

    python -m benchmarks.stable_audio_cpu                          # sao-small: 11.9 s, 8 ping-pong steps, cfg 1
    python -m benchmarks.stable_audio_cpu --variants default,int8,float32 --runs 2
    python -m benchmarks.stable_audio_cpu --size 1.0 --steps 2     # 1.0: 2 of its 100 steps timed, extrapolated

Each run: T5 over the prompt (64 tokens for small, 128 for 1.0, 12 of them the prompt's), the DiT steps
(small: the ping-pong loop at guidance 1, one forward of batch 1 a step; 1.0: guidance 7, batch 2),
then the VAE decode of the whole sample_size. The reference is diffusers' StableAudioDiTModel and
AutoencoderOobleck (decode) and transformers' T5EncoderModel, float32, as they are. Prints each
stage's time, the end-to-end speed-up, peak memory, and how far each variant's outputs are from the
reference's on the same inputs (SNR in dB: the DiT's first output, the decode of the same latents,
and the final audio with the same noise).
"""

from __future__ import annotations

import argparse
import datetime
import math
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from tunesmith.generation import pin_threads

from .bench import PeakMemory, weights_mb
from .common import hardware, report

SIZES = ("small", "1.0", "tiny")
PROMPT_TOKENS = 12  # a prompt of some ten words, then EOS; the rest is padding


@dataclass
class Spec:
    """The architecture and the run of one size."""
    name: str
    dit: dict  # StableAudioDiTModel arguments
    qk_norm: bool  # small: LayerNorm(head_dim, eps 1e-6) on queries and keys
    vae: dict  # AutoencoderOobleck arguments
    t5: dict  # T5Config arguments
    text_tokens: int  # T5 max_length
    seconds_tokens: int  # number-conditioner tokens after the prompt in cross-attention
    steps: int  # the sampler's steps
    cfg: float
    rotary_dim: int

    @property
    def frames(self) -> int:
        return self.dit["sample_size"]


_REAL_VAE = dict(encoder_hidden_size=128, downsampling_ratios=[2, 4, 4, 8, 8], channel_multiples=[1, 2, 4, 8, 16],
                 decoder_channels=128, decoder_input_channels=64, audio_channels=2, sampling_rate=44100)
_T5_BASE = dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)

SPECS = {
    # stabilityai/stable-audio-open-small's model_config.json: embed_dim 1024, depth 16, 8 heads, cond_token_dim
    # 768 projected to 1024 (to_cond_embed), global_cond_dim 768 (seconds_total), qk_norm "ln", T5-base.
    "small": Spec("stable-audio-open-small", dict(
        sample_size=256, in_channels=64, num_layers=16, attention_head_dim=128, num_attention_heads=8,
        num_key_value_attention_heads=8, out_channels=64, cross_attention_dim=1024, time_proj_dim=256,
        global_states_input_dim=768, cross_attention_input_dim=768), True, _REAL_VAE, _T5_BASE, 64, 1, 8, 1.0, 64),
    # stabilityai/stable-audio-open-1.0's transformer/config.json and vae/config.json.
    "1.0": Spec("stable-audio-open-1.0", dict(
        sample_size=1024, in_channels=64, num_layers=24, attention_head_dim=64, num_attention_heads=24,
        num_key_value_attention_heads=12, out_channels=64, cross_attention_dim=768, time_proj_dim=256,
        global_states_input_dim=1536, cross_attention_input_dim=768), False, _REAL_VAE, _T5_BASE, 128, 2, 100, 7.0,
        32),
    # The test suite's: checks that the benchmark runs end to end, not speed.
    "tiny": Spec("tiny", dict(
        sample_size=32, in_channels=3, num_layers=2, attention_head_dim=8, num_attention_heads=4,
        num_key_value_attention_heads=2, out_channels=3, cross_attention_dim=16, time_proj_dim=8,
        global_states_input_dim=10, cross_attention_input_dim=12), True,
        dict(encoder_hidden_size=6, downsampling_ratios=[2, 4], channel_multiples=[2, 4], decoder_channels=6,
             decoder_input_channels=3, audio_channels=2, sampling_rate=4000),
        dict(vocab_size=64, d_model=12, d_kv=4, d_ff=16, num_layers=2, num_heads=3, relative_attention_num_buckets=8),
        16, 1, 3, 1.0, 4),
}

# name -> (DiT dtype, DiT quantize, VAE dtype, VAE quantize); "int8" is what quantize="int8" loads
VARIANTS = {"default": (torch.bfloat16, None, torch.bfloat16, None),
            "int8": (torch.bfloat16, "int8", torch.bfloat16, "int8"),
            "int8-dit": (torch.bfloat16, "int8", torch.bfloat16, None),
            "float32": (torch.float32, None, torch.float32, None),
            "bf16-dit": (torch.bfloat16, None, torch.float32, None)}


def build(spec: Spec, seed: int = 0):
    """Random parts at the spec's sizes, the modules' own initialisation: (T5 encoder, DiT, VAE)."""
    from diffusers import AutoencoderOobleck, StableAudioDiTModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(T5Config(**spec.t5)).eval()
    dit = StableAudioDiTModel(**spec.dit).eval()
    if spec.qk_norm:
        for block in dit.transformer_blocks:
            for attn in (block.attn1, block.attn2):
                attn.norm_q = nn.LayerNorm(spec.dit["attention_head_dim"], eps=1e-6)
                attn.norm_k = nn.LayerNorm(spec.dit["attention_head_dim"], eps=1e-6)
    vae = AutoencoderOobleck(**spec.vae).eval()
    for module in (text_encoder, dit, vae):
        module.requires_grad_(False)
    return text_encoder, dit, vae


@dataclass
class Inputs:
    ids: torch.Tensor  # [B, T] T5 ids, padded
    mask: torch.Tensor  # [B, T]
    seconds: torch.Tensor  # [B', n, D_in] the number conditioners' tokens (stand-ins: random)
    global_states: torch.Tensor  # [B', 1, D_g]
    noise: list[torch.Tensor]  # the start noise, then one draw a step (ping-pong)
    rotary: tuple


def make_inputs(spec: Spec, seed: int = 1) -> Inputs:
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    g = torch.Generator().manual_seed(seed)
    T = spec.text_tokens
    n = min(PROMPT_TOKENS, T)
    ids = torch.zeros(1, T, dtype=torch.long)
    ids[0, :n - 1] = torch.randint(3, spec.t5["vocab_size"], (n - 1,), generator=g)
    ids[0, n - 1] = 1  # EOS
    mask = (torch.arange(T) < n).long()[None]
    rows = 2 if spec.cfg > 1 else 1
    d_in, d_g = spec.dit["cross_attention_input_dim"], spec.dit["global_states_input_dim"]
    shape = (1, spec.dit["in_channels"], spec.frames)
    return Inputs(ids, mask, torch.randn(1, spec.seconds_tokens, d_in, generator=g),
                  torch.randn(1, 1, d_g, generator=g).expand(rows, -1, -1).contiguous(),
                  [torch.randn(shape, generator=g) for _ in range(spec.steps + 1)],
                  get_1d_rotary_pos_embed(spec.rotary_dim, spec.frames + 1, use_real=True,
                                          repeat_interleave_real=False))


@dataclass
class Engine:
    """One way to run the parts: the functions each stage calls."""
    name: str
    encode: object  # (ids, mask) -> [1, T, D] states, zero at padding
    dit: nn.Module  # called as StableAudioDiTModel
    decode: object  # latents -> audio
    weights: float  # MB


def reference_engine(text_encoder, dit, vae) -> Engine:
    def encode(ids, mask):
        return text_encoder(input_ids=ids, attention_mask=mask)[0] * mask.unsqueeze(-1)

    return Engine("diffusers float32", encode, dit, lambda z: vae.decode(z).sample,
                  weights_mb(text_encoder, dit, vae.decoder))


def tunesmith_engine(variant: str, text_encoder, dit, vae) -> Engine:
    from tunesmith.stable_audio import cpu
    from tunesmith.stable_audio.sample import encode_text

    dit_dtype, quantize, vae_dtype, vae_quantize = VARIANTS[variant]
    fast_dit = cpu.prepare_dit(dit, dit_dtype, quantize)
    decoder = cpu.OobleckDecoderCPU(vae.decoder, vae_dtype, quantize=vae_quantize)
    size = weights_mb(text_encoder, fast_dit) + _tensors_mb(fast_dit.blocks, decoder)
    label = {"default": "default (bf16 DiT, bf16 VAE)", "int8": "int8 (int8 DiT, int8 VAE)",
             "int8-dit": "int8 DiT, bf16 VAE",
             "float32": "float32 (float32 DiT and VAE)", "bf16-dit": "bf16 DiT, float32 VAE"}[variant]
    return Engine(f"tunesmith {label}", lambda ids, mask: encode_text(text_encoder, ids, mask), fast_dit,
                  decoder, size)


def _tensors_mb(*objects) -> float:
    """MB of the tensors held in plain objects' fields (layers that are not nn.Modules), each once."""
    found = {}

    def walk(value):
        if isinstance(value, torch.Tensor):
            found[id(value)] = value
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif hasattr(value, "__dict__") and not isinstance(value, nn.Module):
            walk(vars(value))

    walk(objects)
    return sum(t.numel() * t.element_size() for t in found.values()) / 2**20


@dataclass
class Run:
    text: float = 0.0
    steps: list[float] = field(default_factory=list)
    decode: float = 0.0
    wall: float = 0.0
    extra_mb: float = 0.0
    first_v: torch.Tensor | None = None  # the DiT's output at the first step
    cross: torch.Tensor | None = None  # the cross-attention states it was given
    latents: torch.Tensor | None = None
    audio: torch.Tensor | None = None


@torch.inference_mode()
def warm_up(engine: Engine, spec: Spec, inputs: Inputs):
    """Not timed: the first calls fault the weights in and let oneDNN pick its kernels."""
    cross = torch.cat([engine.encode(inputs.ids, inputs.mask), inputs.seconds], dim=1)
    rows = inputs.global_states.shape[0]
    engine.dit(inputs.noise[0].expand(rows, -1, -1), torch.tensor([0.5]),
               encoder_hidden_states=cross.expand(rows, -1, -1), global_hidden_states=inputs.global_states,
               rotary_embedding=inputs.rotary)
    engine.decode(inputs.noise[0][:, :, :16])


@torch.inference_mode()
def run(engine: Engine, spec: Spec, inputs: Inputs, steps: int) -> Run:
    """One generation: text, `steps` DiT steps, decode. Small: ping-pong, x_t = (1 - t) data + t noise,
    v = noise - data; 1.0 (guided, batch 2): the same update stands in for DPM-Solver++ (its arithmetic
    costs nothing next to a DiT forward)."""
    out = Run()
    with PeakMemory(torch.device("cpu")) as mem:
        t0 = time.perf_counter()
        prompt = engine.encode(inputs.ids, inputs.mask)  # [1, T, D]
        cross = torch.cat([prompt, inputs.seconds], dim=1)
        if spec.cfg > 1:
            cross = torch.cat([torch.zeros_like(cross), cross])  # the unconditioned row first
        out.text = time.perf_counter() - t0
        out.cross = cross
        t = torch.linspace(1, 0, spec.steps + 1)
        x = inputs.noise[0]
        for i in range(steps):
            s0 = time.perf_counter()
            model_in = torch.cat([x, x]) if spec.cfg > 1 else x
            v = engine.dit(model_in, t[i].reshape(1), encoder_hidden_states=cross,
                           global_hidden_states=inputs.global_states, rotary_embedding=inputs.rotary,
                           return_dict=False)[0]
            if spec.cfg > 1:
                uncond, cond = v.chunk(2)
                v = uncond + spec.cfg * (cond - uncond)
            if i == 0:
                out.first_v = v.clone()
            denoised = x - t[i] * v
            x = (1 - t[i + 1]) * denoised + t[i + 1] * inputs.noise[i + 1]
            out.steps.append(time.perf_counter() - s0)
        out.latents = x
        d0 = time.perf_counter()
        out.audio = engine.decode(x)
        out.decode = time.perf_counter() - d0
        out.wall = time.perf_counter() - t0
    out.extra_mb = mem.extra_mb
    return out


def snr_db(reference: torch.Tensor, x: torch.Tensor) -> float:
    reference, x = reference.double(), x.double()
    return 10 * torch.log10(reference.pow(2).sum() / (reference - x).pow(2).sum().clamp_min(1e-300)).item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=SIZES)
    parser.add_argument("--steps", type=int, default=None,
                        help="DiT steps to time (default: all of small's 8; 2 of 1.0's 100, extrapolated)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--variants", default="default,int8", help=f"tunesmith variants: {', '.join(VARIANTS)}")
    parser.add_argument("--no-reference", action="store_true", help="skip the float32 diffusers run")
    parser.add_argument("--markdown", help="append the tables to this markdown file")
    args = parser.parse_args(argv)
    pin_threads(torch.get_num_threads())  # both sides on the same threads: no per-call back-off

    spec = SPECS[args.size]
    steps = args.steps or (2 if spec.steps > 10 else spec.steps)
    inputs = make_inputs(spec)
    text_encoder, dit, vae = build(spec)
    engines = [tunesmith_engine(v, text_encoder, dit, vae) for v in args.variants.split(",")]
    if not args.no_reference:
        engines.append(reference_engine(text_encoder, dit, vae))
    for engine in engines:
        warm_up(engine, spec, inputs)
    results: dict[str, list[Run]] = {e.name: [] for e in engines}
    for r in range(args.runs):
        for engine in engines:
            done = run(engine, spec, inputs, steps)
            results[engine.name].append(done)
            print(f"run {r + 1}: {engine.name}: {done.wall:.1f} s (text {done.text:.2f}, DiT {sum(done.steps):.2f} "
                  f"for {steps} steps, decode {done.decode:.2f})", flush=True)
    plain_bf16 = None
    if not args.no_reference:  # how far diffusers' own bfloat16 DiT (a plain .to(bfloat16)) lands, for scale
        dit.to(torch.bfloat16)
        with torch.inference_mode():
            ref = results[engines[-1].name][0]
            plain_bf16 = dit(inputs.noise[0].bfloat16().expand(inputs.global_states.shape[0], -1, -1),
                             torch.tensor([1.0]).bfloat16(), encoder_hidden_states=ref.cross.bfloat16(),
                             global_hidden_states=inputs.global_states.bfloat16(), rotary_embedding=inputs.rotary,
                             return_dict=False)[0].float()
            if spec.cfg > 1:
                uncond, cond = plain_bf16.chunk(2)
                plain_bf16 = uncond + spec.cfg * (cond - uncond)
    report(render(spec, args, steps, engines, results, plain_bf16), args.markdown)


def render(spec: Spec, args, steps: int, engines: list[Engine], results: dict[str, list[Run]],
           plain_bf16: torch.Tensor | None = None) -> str:
    seconds = spec.frames * math.prod(spec.vae["downsampling_ratios"]) / spec.vae["sampling_rate"]
    partial = steps < spec.steps
    ref_name = engines[-1].name if not args.no_reference else None

    def med(values):
        return statistics.median(values)

    def total(r: Run) -> float:  # end to end, with the untimed steps at the median step's time
        return r.text + sum(r.steps) + (spec.steps - steps) * med(r.steps) + r.decode

    cols = [e.name for e in engines]
    sampler = "ping-pong" if spec.cfg <= 1 else "DPM-Solver++ (2M SDE)"
    lines = [(f"### {spec.name}, {seconds:.1f} s, {spec.steps} {sampler} steps, cfg {spec.cfg:g}, "
              f"batch {2 if spec.cfg > 1 else 1} ({datetime.date.today()})"), "",
             (f"Hardware: {hardware()}. Command: `python -m benchmarks.stable_audio_cpu {' '.join(sys.argv[1:])}`. "
              f"Median of {args.runs} interleaved runs, random weights (the modules' own initialisation)."), "",
             "| stage (s) | " + " | ".join(cols) + " |", "| --- |" + " ---: |" * len(cols)]

    def row(label, fn, fmt="{:.2f}"):
        lines.append(f"| {label} | " + " | ".join(fmt.format(fn(results[c])) for c in cols) + " |")

    row(f"text encoding (T5, {spec.text_tokens} tokens)", lambda rs: med([r.text for r in rs]))
    for i in range(steps):
        row(f"DiT step {i + 1}", lambda rs, i=i: med([r.steps[i] for r in rs]))
    if partial:
        row(f"DiT, {spec.steps} steps (extrapolated from {steps})",
            lambda rs: med([med(r.steps) * spec.steps for r in rs]), "{:.1f}")
    else:
        row(f"DiT, all {spec.steps} steps", lambda rs: med([sum(r.steps) for r in rs]))
    row(f"VAE decode ({spec.frames} frames)", lambda rs: med([r.decode for r in rs]))
    row("end to end" + (" (extrapolated)" if partial else ""), lambda rs: med([total(r) for r in rs]))
    if ref_name:
        ref_total = med([total(r) for r in results[ref_name]])
        row("speed-up, end to end", lambda rs: ref_total / med([total(r) for r in rs]), "{:.1f}x")
        ref_dit = med([med(r.steps) for r in results[ref_name]])
        row("speed-up, DiT step", lambda rs: ref_dit / med([med(r.steps) for r in rs]), "{:.1f}x")
        ref_dec = med([r.decode for r in results[ref_name]])
        row("speed-up, VAE decode", lambda rs: ref_dec / med([r.decode for r in rs]), "{:.1f}x")
    row("peak extra memory (MB)", lambda rs: max(r.extra_mb for r in rs), "{:.0f}")
    lines.append("| weights (MB) | " + " | ".join(f"{e.weights:.0f}" for e in engines) + " |")
    lines.append("")
    if ref_name:
        ref = results[ref_name][0]
        lines += [("Output difference from the float32 reference (SNR, dB: signal power over error power; "
                   "same weights, inputs and noise):"), "",
                  "| variant | DiT output, step 1 | VAE decode of the same latents | final audio |",
                  "| --- | ---: | ---: | ---: |"]
        for engine in engines[:-1]:
            mine = results[engine.name][0]
            decoded = engine.decode(ref.latents)
            lines.append(f"| {engine.name} | {snr_db(ref.first_v, mine.first_v):.1f} | "
                         f"{snr_db(ref.audio, decoded):.1f} | {snr_db(ref.audio, mine.audio):.1f} |")
        if plain_bf16 is not None:
            lines.append(f"| for scale: diffusers' DiT cast to bfloat16 (not timed) | "
                         f"{snr_db(ref.first_v, plain_bf16):.1f} | | |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
