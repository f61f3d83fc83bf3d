"""StableAudio3: Stable Audio 3 (Small and Medium, post-trained and base) behind the same generate() as the
other families: text to audio, audio-to-audio (audio_prompt + strength) and repaint (audio_prompt + repaint)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..audio.prompt import fit_audio
from ..clip import Clip
from ..device import pick_dtype
from ..diffusion.noise import row_noise, seeded_generators
from ..errors import InvalidParameter
from ..generation import Family, StageClock, clips_of_rows, generated_seconds
from ..lora import describe as describe_lora
from ..request import DiffusionParams, Request, check_request, named
from .parts import StableAudio3Config, StableAudio3Parts
from .decode import decode, window_count
from .sample import encode_audio, encode_conditions, keep_mask, latent_length, noise_levels, sample

log = logging.getLogger("tunesmith")

DEFAULT_STRENGTH = 0.7  # audio-to-audio: keeps the init audio's shape, changes its sound (as Stable Audio Open)


class StableAudio3(Family):
    """A loaded Stable Audio 3 checkpoint: `tunesmith.load("sa3-small")`, then `generate(...)`."""

    family = "stable_audio3"
    quantize_choices = ("int8",)

    def __init__(self, parts: StableAudio3Parts, name: str, device: torch.device, dtype: torch.dtype,
                 quantize: str | None = None, lora: list | None = None):
        self._parts = parts
        self.name = name
        self.device = device
        self.dtype = dtype
        self.quantize = quantize
        self.lora = lora or []  # the AdapterSpecs merged into the DiT and the duration embedder, in order

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "sa3-small", device: str = "auto",
                        dtype: str | torch.dtype | None = None, quantize: str | None = None,
                        threads: int | None = None, lora=None, swap_lora: bool = False) -> "StableAudio3":
        """Load a checkpoint: an alias (sa3-small, sa3-medium, ...), a hub id or a local folder in diffusers'
        layout (what StableAudio3Pipeline.save_pretrained writes).

        device: "auto" (CUDA, then Apple MPS, then the CPU), "cpu", "cuda", "cuda:1" or "mps".
        dtype: the DiT's precision; half precision on CUDA and MPS. On the CPU bfloat16 where the CPU
            computes it natively (tunesmith's CPU path, cpu.py: the DiT's and the SAME decoder's products
            in bfloat16, float32 around them), else float32: diffusers' own modules, the pipeline's exact
            audio. The text encoder and the autoencoder's encoder run in float32.
        quantize: "int8" on the CPU: the DiT's products in int8 (per-row weights); the fastest CPU form on
            CPUs without native bfloat16 (BENCHMARKS.md has its speed and its distance from float32).
        lora: Stability's LoRA/DoRA adapters (one .safetensors file each, the config in its metadata), merged
            once, in order, into the DiT's and the duration embedder's weights as Stability's stacked
            adapters compute them: a path, "path@scale", (path, scale) or a list of them; scale (Stability's
            strength) from -2 to 2, default 1. Each is checked against the checkpoint's shapes before any
            weight is read. Merged in float32 before the CPU path rounds or quantizes.
        swap_lora: keep what use_lora(...) needs to swap adapter sets later (the server's per-job adapters),
            each set giving what a model loaded with it gives: in float32 the weights a set touches, while it
            is merged; on the CPU's bfloat16/int8 path the DiT's float32 weights as loaded (memory: the DiT in
            float32 beside its CPU form), each touched layer rounded or quantized again from them; in half
            precision on a GPU the reachable layers' float32 weights in host memory.
            An adapter given as (path, scale, (low, high)) acts at the steps whose noise level (1 at the
            start, 0 at the end) is within [low, high] only, as Stability's LoRA interval: the model then keeps
            what swap_lora keeps, and swaps adapters where a step enters or leaves an interval.
        """
        from ..lora import parse_specs
        from .adapters import checkpoint_sites, fit, merge, read_adapters
        from .load import load_folder

        specs = parse_specs(lora)
        adapters = read_adapters(specs)
        dev, dt, folder = cls._open(name_or_path, device, dtype, threads, quantize, default_dtype)
        placed = fit(adapters, checkpoint_sites(folder), "this Stable Audio 3 model") if adapters else []
        cpu_path = dev.type == "cpu" and (dt != torch.float32 or quantize is not None)
        if swap_lora or any(spec.interval for spec in specs):  # an interval swaps adapters at step boundaries
            model = cls._swappable(load_folder(folder, dev, torch.float32), checkpoint_sites(folder),
                                   str(name_or_path), dev, dt, quantize, cpu_path)
            model.use_lora(specs)
            return model
        if not placed and not cpu_path:
            return cls(load_folder(folder, dev, dt), str(name_or_path), dev, dt, quantize, specs)
        # loaded in float32: adapters merge there, and what the CPU path keeps in float32 is not rounded first
        parts = load_folder(folder, dev, torch.float32)
        if placed:
            merge(parts, placed)
        if cpu_path:
            from .cpu import for_cpu

            parts = for_cpu(parts, dt, quantize)
        else:
            parts = parts.to(dev, dt)
        return cls(parts, str(name_or_path), dev, dt, quantize, specs)

    @classmethod
    def _swappable(cls, parts: StableAudio3Parts, model_sites: dict, name: str, dev, dt, quantize,
                   cpu_path: bool) -> "StableAudio3":
        """A model whose adapter set use_lora swaps (lora_swap.py), from parts loaded in float32: live weights
        in float32; derived from the kept float32 weights on the CPU path and in half precision."""
        from ..lora_swap import AdapterSwap, Offloaded
        from .adapters import merger, site_weights

        adapters = merger(model_sites, "this Stable Audio 3 model")
        weights = site_weights(parts, model_sites)  # Stability's layer name -> the module's weight
        if cpu_path:
            from .cpu import for_cpu, kept_float32

            dit = parts.transformer  # float32, kept: the products of its blocks are made again from it
            # what runs as it is in float32 takes each set in place: its base copied (the duration embedder,
            # the DiT's embedders, convs and projections); a block's linears only feed its products
            base = {n: w.detach().clone() if model_sites[n].part == "seconds" or kept_float32(model_sites[n].module)
                    else w.detach() for n, w in weights.items()}
            parts = for_cpu(parts, dt, quantize)  # from the loaded modules, as load() makes its CPU form

            def install(values: dict):
                parts.transformer.rebuild(dit, {model_sites[n].module: v for n, v in values.items()
                                                if model_sites[n].part == "transformer"})
                with torch.no_grad():
                    for n, v in values.items():
                        if model_sites[n].part == "seconds":
                            parts.seconds.get_submodule(model_sites[n].module).weight.copy_(v)

            model = cls(parts, name, dev, dt, quantize)
            model._swap = AdapterSwap(adapters, base=base, install=install)
            return model
        if dt == torch.float32:
            model = cls(parts, name, dev, dt)
            model._swap = AdapterSwap(adapters, weights=weights)
            return model
        # half precision: merged in float32 on the device and rounded once, as a load-time merge is
        host = {n: w.detach().to("cpu", copy=True) for n, w in weights.items()}
        parts = parts.to(dev, dt)
        weights = site_weights(parts, model_sites)  # the DiT's now in dt (the embedder stays float32)

        def install_rounded(values: dict):
            with torch.no_grad():
                for n, v in values.items():
                    weights[n].copy_(v.to(weights[n].dtype))

        model = cls(parts, name, dev, dt)
        model._swap = AdapterSwap(adapters, base=Offloaded(host, dev), install=install_rounded)
        return model

    @staticmethod
    def _check_placement(device: torch.device, dtype: torch.dtype, quantize: str | None):
        if quantize is not None and device.type != "cpu":
            raise InvalidParameter("quantize='int8' is for the CPU: on a GPU, half precision is faster")
        if device.type == "cpu" and dtype == torch.float16:  # float32 is diffusers' path, bfloat16 and int8 ours
            raise InvalidParameter("float16 does not suit the CPU: use bfloat16 or float32")

    @property
    def config(self) -> StableAudio3Config:
        return self._parts.config

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def audio_channels(self) -> int:
        return self.config.audio_channels

    @property
    def max_seconds(self) -> float:
        """The longest clip the model makes at once."""
        return self.config.longest

    def generate(self, prompts: str | Sequence[str], *, duration: float | None = None, seed: int | None = None,
                 steps: int | None = None, cfg: float | None = None, negative_prompt: str | None = None,
                 num_variations: int = 1, audio_prompt=None, strength: float | None = None, repaint=None,
                 continuation=None, loop: bool = False, progress: bool | Callable[[int, int], None] = False,
                 bpm: float | None = None, key: str | None = None, time_signature: int | None = None,
                 bars: int | None = None) -> list[Clip]:
        """One Clip per prompt and variation (prompt-major order), all in one batch.

        duration: seconds, up to the model's longest clip (default 10 s, or audio_prompt's length).
        seed: makes the output reproducible; variation v of every prompt uses seed + v. On the CPU in
            float32 the audio is what diffusers' StableAudio3Pipeline gives for the same seed
            (generator=torch.Generator("cpu").manual_seed(seed)).
        steps: sampler steps (default: 8 for post-trained checkpoints, ping-pong; 100 for base ones, Euler).
        cfg: classifier-free guidance (1: off, the default; for the base checkpoints).
        negative_prompt: what to steer away from (with guidance only).
        audio_prompt: audio (a path, a Clip or (array, sample_rate)) to start from. With strength in [0, 1]
            (default 0.7): audio-to-audio, 0 keeps it, 1 ignores it. With repaint: (start, end) seconds, or
            a list of spans, made anew while the rest is kept.
        continuation: audio to extend (a path, a Clip or (array, sample_rate)): it is kept, and what follows
            it is made up to `duration`, the total length (a repaint of the span after it).
        loop: each clip is a seamless loop of exactly `duration` (a little more is generated).
        progress: True for a progress bar on stderr, or a callable (done, total).
        bpm, key: written into each prompt as Stable Audio Open's captions have them ("<prompt>, 124 BPM,
            C major"); time_signature and bars: with bpm, bars sets the duration to exactly bars * beats * 60 / bpm.
        """
        request = check_request(prompts, family=self.family, duration=duration, seed=seed,
                                num_variations=num_variations, loop=loop, audio_prompt=audio_prompt,
                                longest=self.max_seconds, steps=steps, cfg=cfg, negative_prompt=negative_prompt,
                                strength=strength, repaint=repaint, continuation=continuation, bpm=bpm, key=key,
                                time_signature=time_signature, bars=bars)
        return self.generate_request(request, progress=progress)

    def _plan(self, request: Request) -> "_Plan":
        config = self.config
        p = request.diffusion or DiffusionParams()
        seconds = generated_seconds(request, config.longest)
        cfg = config.cfg if p.cfg is None else p.cfg
        if p.negative_prompt is not None and cfg <= 1:
            raise InvalidParameter(f"{named('negative_prompt')} needs guidance: add cfg (--cfg) above 1")
        init = None
        if request.audio_prompt is not None:
            init = fit_audio(*request.audio_prompt, config.sample_rate, config.audio_channels)
            samples = latent_length(self._parts, seconds) * config.hop
            if init.shape[1] > samples:
                log.warning("the init audio lasts %.2f s: only its first %.2f s are used",
                            init.shape[1] / config.sample_rate, seconds)
            init = init[:, :samples]  # the autoencoder hears no more than the clip
        strength = 1.0 if init is None or p.repaint else (DEFAULT_STRENGTH if p.strength is None else p.strength)
        return _Plan(request.rows, request.duration, seconds, p.steps or config.steps, cfg, p.negative_prompt,
                     init, strength, p.repaint, request.loop)

    @torch.inference_mode()
    def _run(self, plan: "_Plan", report) -> tuple[torch.Tensor, dict]:
        parts, config = self._parts, self.config
        clock = StageClock(self.device)
        texts = [schedule[0][1] for schedule, _ in plan.rows]
        seeds = [seed for _, seed in plan.rows]
        guided = plan.cfg > 1  # as the pipeline: guidance 1 or less is no guidance
        on_level = self._interval_swaps()
        cond = encode_conditions(parts, texts, plan.seconds, guided, plan.negative)
        clock.lap("text")
        length = latent_length(parts, plan.seconds)
        generators = seeded_generators(seeds)
        total = plan.steps + window_count(length, parts.vae)  # progress: the steps, then the decoded windows
        step_report = (lambda done: report(done, total)) if report else None
        init = None
        if plan.init is not None:
            audio = torch.from_numpy(plan.init)[None].to(self.device)
            init = encode_audio(parts, audio, length).expand(len(seeds), -1, -1)  # [B, C, L]
            clock.lap("init")
        noise = row_noise(generators, (config.latent_dim, length)).to(self.device)  # [B, C, L]
        levels = noise_levels(parts, plan.steps, plan.strength).to(self.device)
        if plan.repaint:
            keep = keep_mask(parts, list(plan.repaint), length, self.device).expand(len(seeds), -1, -1)
            local = torch.cat([keep, init * keep], dim=1)  # [B, 1 + C, L]: the DiT hears what to keep, and where
            cond.local = torch.cat([local, local]) if guided else local
            latents = sample(parts, noise, cond, levels, plan.cfg, generators, step_report, on_level)
        elif init is not None and plan.strength == 0:
            latents = init  # nothing to move: the init audio as the autoencoder renders it
            if step_report:
                step_report(plan.steps)
        else:
            x = noise if init is None else (1.0 - plan.strength) * init + plan.strength * noise
            latents = sample(parts, x, cond, levels, plan.cfg, generators, step_report, on_level)
        clock.lap("dit")
        decoded = iter(range(plan.steps + 1, total + 1))
        audio = decode(parts.vae, latents, int(plan.seconds * config.sample_rate),
                       report=(lambda: report(next(decoded), total)) if report else None,
                       layers=self._decoder_layers())
        clock.lap("vae")
        return audio, clock.seconds

    def _decoder_layers(self) -> list | None:
        """The SAME decoder's layers to decode with: on a GPU in half precision, each layer's products in
        the DiT's dtype with float32 around attention (norms, RoPE, both softmaxes of the differential
        attention and their difference, as the CPU's bfloat16 form): a 120 s SAME-L decode took 0.93 s in
        float32 on an H200 and 0.19 s all in bfloat16 (BENCHMARKS.md). Made at the first decode, kept until
        the parts move. None elsewhere: the layers as loaded (float32, or cpu.for_cpu's CPU forms)."""
        parts = self._parts
        if self.device.type == "cpu" or self.dtype == torch.float32:
            return None
        if parts.half_decoder is None:
            from .cpu import mixed_layers

            parts.half_decoder = mixed_layers(parts.vae, self.dtype)
        return parts.half_decoder

    def _interval_swaps(self) -> Callable[[torch.Tensor], None] | None:
        """With adapters that act at some noise levels only (Stability's LoRA interval): the whole set merged
        for the conditioners (Stability gates the DiT's adapters only; the duration embedder runs before the
        steps), and the step hook that swaps in, before each DiT call, the adapters whose interval holds the
        step's level (lora_swap: merged from the kept base, never from a merged copy). None: nothing to swap."""
        swap = getattr(self, "_swap", None)
        if swap is None or not any(spec.interval for spec in self.lora):
            return None
        from .adapters import acting

        specs = self.lora
        swap.use(specs)
        return lambda level: swap.use(acting(specs, level))

    def _clips(self, plan: "_Plan", run: tuple[torch.Tensor, dict]) -> list[Clip]:
        audio, seconds = run
        settings = self._settings(plan.duration, plan.loop, steps=plan.steps, cfg=plan.cfg,
                                  negative_prompt=plan.negative)
        if self.quantize:
            settings["quantize"] = self.quantize
        if self.lora:
            settings["lora"] = describe_lora(self.lora)
        if plan.repaint:
            settings["repaint"] = [list(span) for span in plan.repaint]
        elif plan.init is not None:
            settings["strength"] = plan.strength
        return clips_of_rows(plan.rows, audio.cpu().numpy(), self.sample_rate, settings, seconds,
                             plan.duration if plan.loop else None)

    def _move(self, device: torch.device, dtype: torch.dtype):
        self._parts.to(device, dtype)


@dataclass
class _Plan:
    rows: list  # (schedule, seed) per batch row
    duration: float  # of each clip
    seconds: float  # generated (a loop's is longer)
    steps: int
    cfg: float
    negative: str | None
    init: np.ndarray | None  # (channels, samples) at the model's rate, at most the clip's latents' worth
    strength: float  # the noise level sampling starts from: 1 for text alone and for a repaint
    repaint: tuple | None  # ((start, end), ...) seconds to make anew
    loop: bool


def default_dtype(device: torch.device) -> torch.dtype:
    """Half precision on CUDA and MPS; on the CPU bfloat16 where it is native (AVX512-BF16, AMX), else
    float32 (on AVX2 bfloat16 products run at a fraction of float32's speed: BENCHMARKS.md)."""
    if device.type == "mps":
        return torch.float16
    return pick_dtype(None, device)
