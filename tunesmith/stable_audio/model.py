"""StableAudio: Stable Audio Open (1.0 and small) behind the same generate() as MusicGen."""

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
from ..request import DiffusionParams, Request, check_request, named
from .parts import StableAudioConfig, StableAudioParts
from .sample import decode, encode_audio, encode_conditions, sample_dpmpp, sample_flow

log = logging.getLogger("tunesmith")

SAMPLERS = {"dpmpp-2m-sde": ["dpmpp-2m-sde"], "pingpong": ["pingpong", "euler"]}  # model's own -> choices
DEFAULT_STRENGTH = 0.7  # audio-to-audio: keeps the init audio's shape, changes its sound


class StableAudio(Family):
    """A loaded Stable Audio Open checkpoint: `tunesmith.load("sao-small")`, then `generate(...)`."""

    family = "stable_audio"
    quantize_choices = ("int8",)

    def __init__(self, parts: StableAudioParts, name: str, device: torch.device, dtype: torch.dtype,
                 quantize: str | None = None):
        self._parts = parts
        self.name = name
        self.device = device
        self.dtype = dtype
        self.quantize = quantize

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "sao-small", device: str = "auto",
                        dtype: str | torch.dtype | None = None, quantize: str | None = None,
                        threads: int | None = None) -> "StableAudio":
        """Load a checkpoint: an alias (sao-small, sao), a hub id or a local folder, in the diffusers
        layout (stable-audio-open-1.0) or the stable-audio-tools one (stable-audio-open-small).

        device: "auto" (CUDA, then Apple MPS, then the CPU), "cpu", "cuda", "cuda:1" or "mps".
        dtype: the DiT's precision; by default half precision on CUDA and MPS; on the CPU bfloat16
            where the CPU computes it natively (tunesmith's CPU path for the DiT and the VAE decoder,
            cpu.py: about 6x faster than float32 diffusers), else float32. float32 on the CPU runs
            diffusers' own modules: the pipeline's exact audio. The VAE runs in float32 on MPS; the
            text encoder always does.
        quantize: "int8" on the CPU: the DiT's and the VAE decoder's products in int8 (faster again,
            further from float32; BENCHMARKS.md has both).
        """
        from .load import load_folder

        dev, dt, folder = cls._open(name_or_path, device, dtype, threads, quantize, default_dtype)
        fast_cpu = dev.type == "cpu" and (dt != torch.float32 or quantize is not None)
        if not fast_cpu:
            return cls(load_folder(folder, dev, dt, vae_dtype(dev, dt)), str(name_or_path), dev, dt)
        from .cpu import for_cpu

        # loaded in float32, so that the parts the CPU path keeps in float32 are not rounded first
        parts = for_cpu(load_folder(folder, dev, torch.float32, torch.float32), dt, quantize)
        return cls(parts, str(name_or_path), dev, dt, quantize)

    @staticmethod
    def _check_placement(device: torch.device, dtype: torch.dtype, quantize: str | None):
        if quantize is not None and device.type != "cpu":
            raise InvalidParameter("quantize='int8' is for the CPU: on a GPU, half precision is faster")
        if device.type == "cpu" and dtype == torch.float16:  # float32 on the CPU is diffusers' path; the rest is ours
            raise InvalidParameter("float16 does not suit the CPU: use bfloat16 or float32")

    @property
    def config(self) -> StableAudioConfig:
        return self._parts.config

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def audio_channels(self) -> int:
        return self.config.audio_channels

    @property
    def max_seconds(self) -> float:
        """The longest clip the model makes at once (its DiT's sample size)."""
        return self.config.max_seconds

    def generate(self, prompts: str | Sequence[str], *, duration: float | None = None, seed: int | None = None,
                 steps: int | None = None, cfg: float | None = None, negative_prompt: str | None = None,
                 sampler: str | None = None, num_variations: int = 1, audio_prompt=None, strength: float | None = None,
                 loop: bool = False, progress: bool | Callable[[int, int], None] = False, bpm: float | None = None,
                 key: str | None = None, time_signature: int | None = None, bars: int | None = None) -> list[Clip]:
        """One Clip per prompt and variation (prompt-major order), all in one batch.

        duration: seconds, up to the model's longest clip (max_seconds: 47.5 s for 1.0, 11.9 s for small).
        seed: makes the output reproducible (same device and dtype); variation v of every prompt uses
            seed + v. On the CPU in float32, 1.0 gives the audio diffusers' StableAudioPipeline gives
            for the same seed (generator=torch.Generator("cpu").manual_seed(seed)).
        steps: sampler steps (default: the model's, 100 for 1.0, 8 for small).
        cfg: classifier-free guidance (1: off; default 7 for 1.0, 1 for small).
        negative_prompt: what to steer away from (with guidance only).
        sampler: 1.0: "dpmpp-2m-sde"; small: "pingpong" (default) or "euler".
        audio_prompt: audio to start from (a path, a Clip or (array, sample_rate)): audio-to-audio;
            strength in [0, 1] says how far to move from it (0 keeps it, 1 ignores it; default 0.7).
        loop: each clip is a seamless loop of exactly `duration` (a little more is generated).
        progress: True for a progress bar on stderr, or a callable (done, total).
        bpm, key: written into each prompt ("<prompt>, 124 BPM, C major"); time_signature (2, 3, 4 or 6
            beats a bar) and bars: with bpm, bars sets the duration to exactly bars * beats * 60 / bpm seconds.
        """
        request = check_request(prompts, family=self.family, duration=duration, seed=seed, num_variations=num_variations,
                                loop=loop, audio_prompt=audio_prompt, steps=steps, cfg=cfg,
                                negative_prompt=negative_prompt, sampler=sampler, strength=strength, bpm=bpm, key=key,
                                time_signature=time_signature, bars=bars)
        return self.generate_request(request, progress=progress)

    def _plan(self, request: Request) -> "_Plan":
        config = self.config
        p = request.diffusion or DiffusionParams()
        seconds = generated_seconds(request, config.max_seconds)
        sampler = p.sampler or config.sampler
        if sampler not in SAMPLERS[config.sampler]:
            raise InvalidParameter(f"{named('sampler')} {sampler!r} does not suit this model: use "
                                   f"{' or '.join(SAMPLERS[config.sampler])}")
        if p.negative_prompt is not None and (p.cfg or config.cfg) <= 1:
            raise InvalidParameter(f"{named('negative_prompt')} needs guidance: add cfg (--cfg) above 1 "
                                   f"(this model's default is {config.cfg:g})")
        init = None
        if request.audio_prompt is not None:
            init = fit_audio(*request.audio_prompt, config.sample_rate, config.audio_channels)
            length = config.sample_size * config.hop
            if init.shape[1] > length:
                log.warning("the init audio lasts %.2f s: only its first %.2f s are used",
                            init.shape[1] / config.sample_rate, config.max_seconds)
            init = np.pad(init[:, :length], ((0, 0), (0, max(0, length - init.shape[1]))))
        strength = 1.0 if init is None else (DEFAULT_STRENGTH if p.strength is None else p.strength)
        return _Plan(request.rows, request.duration, seconds, p.steps or config.steps,
                     config.cfg if p.cfg is None else p.cfg, p.negative_prompt, sampler, init, strength,
                     request.loop)

    @torch.inference_mode()
    def _run(self, plan: "_Plan", report) -> tuple[torch.Tensor, dict]:
        parts, config = self._parts, self.config
        clock = StageClock(self.device)
        texts = [schedule[0][1] for schedule, _ in plan.rows]
        seeds = [seed for _, seed in plan.rows]
        guided = plan.cfg > 1  # as diffusers: guidance 1 or less is no guidance
        cross, global_states = encode_conditions(parts, texts, plan.seconds, guided, plan.negative)
        clock.lap("text")
        generators = seeded_generators(seeds)
        noise = row_noise(generators, (parts.transformer.config.in_channels, config.sample_size)).to(self.device)
        init = None
        if plan.init is not None and plan.strength < 1:  # strength 1 ignores the init audio
            audio = torch.from_numpy(plan.init)[None].to(self.device)
            init = encode_audio(parts, audio).expand(len(seeds), -1, -1)
            clock.lap("init")
        if init is not None and plan.strength == 0:
            latents = init  # nothing to move: the init audio as the VAE renders it
        elif config.sampler == "dpmpp-2m-sde":
            latents = sample_dpmpp(parts, noise, cross, global_states, plan.steps, plan.cfg, seeds, report,
                                   init, plan.strength)
        else:
            latents = sample_flow(parts, noise, cross, global_states, plan.steps, plan.cfg, generators, report,
                                  plan.sampler, init, plan.strength)
        clock.lap("dit")
        audio = decode(parts, latents, length=int(plan.seconds * config.sample_rate))
        clock.lap("vae")
        return audio, clock.seconds

    def _clips(self, plan: "_Plan", run: tuple[torch.Tensor, dict]) -> list[Clip]:
        audio, seconds = run
        settings = self._settings(plan.duration, plan.loop, steps=plan.steps, cfg=plan.cfg,
                                  negative_prompt=plan.negative, sampler=plan.sampler)
        if plan.init is not None:
            settings["strength"] = plan.strength
        if self.quantize:
            settings["quantize"] = self.quantize
        return clips_of_rows(plan.rows, audio.cpu().numpy(), self.sample_rate, settings, seconds,
                             plan.duration if plan.loop else None)

    def _move(self, device: torch.device, dtype: torch.dtype):
        self._parts.to(device, dtype, vae_dtype(device, dtype))


@dataclass
class _Plan:
    rows: list  # (schedule, seed) per batch row
    duration: float  # of each clip
    seconds: float  # generated (a loop's is longer)
    steps: int
    cfg: float
    negative: str | None
    sampler: str
    init: np.ndarray | None  # (channels, sample_size * hop) at the model's rate
    strength: float
    loop: bool


def vae_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The DiT's dtype on CUDA; float32 elsewhere (half-precision Oobleck decoding hangs on MPS)."""
    return dtype if device.type == "cuda" else torch.float32


def default_dtype(device: torch.device) -> torch.dtype:
    if device.type == "mps":
        return torch.float16
    return pick_dtype(None, device)  # CUDA: bfloat16 (float16 where unsupported); CPU: bfloat16 if native
