"""AceStep: ACE-Step 1.5 (turbo, base, sft) behind the same generate() as MusicGen and Stable Audio."""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..audio.meter import Meter
from ..audio.prompt import fit_audio
from ..clip import Clip
from ..diffusion.noise import row_noise, seeded_generators
from ..errors import InvalidParameter
from ..generation import Family, StageClock, clips_of_rows, generated_seconds
from ..lora import describe as describe_lora
from ..request import Request, SongParams, check_guidance, check_request
from .decode import WINDOW_FRAMES, decode, normalize, windows
from .parts import LONGEST, SHORTEST, AceStepConfig, AceStepParts
from .prompt import INSTRUCTION, REPAINT
from .repaint import encode, source_latents, span_frames
from .sample import context_latents, encode_conditions, sample

log = logging.getLogger("tunesmith")


class AceStep(Family):
    """A loaded ACE-Step 1.5 pipeline folder: `tunesmith.load("acestep")`, then `generate(...)`."""

    family = "acestep"
    quantize_choices = ("int8",)
    shortest, longest = SHORTEST, LONGEST

    def __init__(self, parts: AceStepParts, name: str, device: torch.device, dtype: torch.dtype,
                 quantize: str | None = None, lora: list | None = None):
        self._parts = parts
        self.name = name
        self.device = device
        self.dtype = dtype
        self.quantize = quantize
        self.lora = lora or []  # the AdapterSpecs merged into the DiT, in order
        self._window = WINDOW_FRAMES  # latent frames the VAE decodes at once

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "acestep", device: str = "auto",
                        dtype: str | torch.dtype | None = None, quantize: str | None = None,
                        threads: int | None = None, lora=None, swap_lora: bool = False) -> "AceStep":
        """Load an AceStepPipeline folder: an alias (acestep, acestep-sft, acestep-base, ...), a hub id or
        a local folder.

        device: "auto" (CUDA, then Apple MPS, then the CPU), "cpu", "cuda", "cuda:1" or "mps".
        dtype: the text encoder's, condition encoder's and DiT's precision: by default bfloat16 on CUDA
            (float16 where unsupported) and on CPUs with native bfloat16 (AVX512-BF16, AMX), float32 on
            other CPUs and on MPS (half precision is where ACE-Step v1 made static on Apple Silicon).
            The VAE decodes in float32, except with bfloat16 on the CPU: there the DiT runs as
            acestep/cpu.py's DiTCPU (bfloat16 products around a float32 residual stream, norms and
            modulation: 48 dB from float32 after 8 steps at 2B sizes, 4.3x its speed; BENCHMARKS.md), the
            encoders stay float32 and the VAE decodes through the CPU Oobleck decoder (diffusion/oobleck.py,
            bfloat16 tiles), window by window. dtype="float32" on the CPU is diffusers' exact path (the
            parity contract).
        quantize: "int8" on the CPU: the DiT's and the VAE decoder's products in int8 (dynamic: weights a
            scale per row, activations per token or tile), faster again and further from float32
            (BENCHMARKS.md has both).
        lora: LoRA adapters merged once into the DiT's weights, in order, before any CPU packing or
            quantizing: a path (a PEFT folder, adapter_config.json + adapter_model.safetensors, or one
            ComfyUI-style .safetensors file), "path@scale", (path, scale), or a list of them; scale from
            -2 to 2 (default 1). Each adapter is read and checked against the DiT's shapes before the
            model's weights are read.
        swap_lora: keep what use_lora(...) needs to swap adapter sets later (the server's per-job adapters):
            on the CPU's bfloat16/int8 path the DiT's float32 weights as loaded (memory: the DiT in float32
            beside its CPU form); elsewhere the weights a set touches, while it is merged.
        """
        from ..lora import fit, merge, parse_specs, read_adapters
        from .adapters import dit_shapes, dit_weights, locate

        specs = parse_specs(lora)
        adapters = read_adapters(specs)
        dev, dt, folder = cls._open(name_or_path, device, dtype, threads, quantize)
        patches = fit(adapters, locate, dit_shapes(folder), "this ACE-Step DiT") if adapters else []
        cpu_path = dev.type == "cpu" and (dt == torch.bfloat16 or quantize is not None)
        # the CPU path: the encoders and VAE float32, as they run; the DiT read in bfloat16 (half the memory
        # while loading), its norms and modulation computed in float32 from those values; with adapters,
        # read in float32 so that each is added to the weights before one rounding to bfloat16 (then int8)
        dit_dtype = (torch.float32 if patches or swap_lora else torch.bfloat16) if cpu_path else dt
        from .layout import load_folder

        parts = load_folder(folder, dev, torch.float32 if cpu_path else dt, torch.float32, dit_dtype)
        if swap_lora:
            model = cls._swappable(parts, str(name_or_path), dev, dt, quantize if cpu_path else None, cpu_path)
            model.use_lora(specs)
            return model
        merge(dit_weights(parts.transformer), patches)
        if cpu_path:
            from .cpu import for_cpu

            parts.transformer.to(torch.bfloat16)  # merged: rounded as a DiT read without adapters is
            return cls(for_cpu(parts, dt, quantize), str(name_or_path), dev, dt, quantize, specs)
        return cls(parts, str(name_or_path), dev, dt, lora=specs)

    @classmethod
    def _swappable(cls, parts: AceStepParts, name: str, dev, dt, quantize, cpu_path: bool) -> "AceStep":
        """A model whose adapter set use_lora swaps (lora_swap.py): the DiT's weights live on the diffusers
        path; on the CPU path derived, each touched layer's block rebuilt from the kept float32 DiT."""
        from ..lora_swap import AdapterSwap, peft_merger
        from .adapters import dit_weights, linear_shapes, locate

        merger = peft_merger(locate, linear_shapes(parts.transformer), "this ACE-Step DiT")
        if not cpu_path:
            model = cls(parts, name, dev, dt)
            model._swap = AdapterSwap(merger, weights=dit_weights(parts.transformer))
            return model
        from .cpu import for_cpu

        base = parts.transformer  # float32, kept whole: every block is rebuilt from it
        parts.transformer = copy.deepcopy(base).to(torch.bfloat16)  # the DiT as the CPU path reads it
        cpu = for_cpu(parts, dt, quantize)
        model = cls(cpu, name, dev, dt, quantize)
        model._swap = AdapterSwap(merger, base=dit_weights(base),
                                  install=lambda values: cpu.transformer.rebuild(base, values))
        return model

    @staticmethod
    def _check_placement(device: torch.device, dtype: torch.dtype, quantize: str | None):
        if quantize is not None and device.type != "cpu":
            raise InvalidParameter("quantize='int8' is for the CPU: on a GPU, bfloat16 is faster")
        if device.type == "cpu" and dtype == torch.float16:
            raise InvalidParameter("float16 does not suit the CPU: use float32 (or bfloat16)")

    @property
    def config(self) -> AceStepConfig:
        return self._parts.config

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def channels(self) -> int:
        return self.config.audio_channels

    @property
    def max_seconds(self) -> float:
        return LONGEST

    def generate(self, prompts: str | Sequence[str], *, lyrics: str | None = None, language: str | None = None,
                 duration: float | None = None, seed: int | None = None, steps: int | None = None,
                 cfg: float | None = None, audio_prompt=None, repaint: tuple[float, float | None] | None = None,
                 num_variations: int = 1, loop: bool = False, bpm: float | None = None, key: str | None = None,
                 time_signature: int | None = None, bars: int | None = None,
                 progress: bool | Callable[[int, int], None] = False) -> list[Clip]:
        """One Clip (48 kHz stereo) per prompt and variation, prompt-major.

        prompts: the style of the song ("upbeat indie pop, female vocals, 120 bpm"); one per song.
        lyrics: the words to sing, every song the same; [verse], [chorus], ... tags mark sections. None or
            "" makes an instrumental.
        language: of the lyrics, a code such as "en" (default), "zh", "ja", "es".
        duration: seconds, from 10 to 600 (None: 10, as everywhere); with repaint, the song's own length (leave
            it out).
        seed: makes the output reproducible (same device and dtype); variation v uses seed + v. On the CPU
            in float32 a song is the audio diffusers' AceStepPipeline gives for the same prompt, lyrics,
            duration and seed (generator=torch.Generator("cpu").manual_seed(seed)), to its length.
        steps: flow steps (default: 8 for turbo, 50 for base/sft).
        cfg: guidance for base/sft (default 7; 1 is off); turbo models have none.
        audio_prompt, repaint: a song (a path, a Clip or (array, sample_rate)) and the span (start, end) of
            it, in seconds, to make anew (end None: to the end); the rest of the song is kept. The song
            is resampled to 48 kHz stereo; each clip lasts as long as it. On the CPU in float32, the
            pipeline's task_type="repaint" for the same seed after torch.manual_seed(seed) (README).
        loop: each song is a seamless loop of exactly `duration` (a little more is generated).
        bpm, key, time_signature: the caption's metadata, as the pipeline's bpm, keyscale and timesignature
            (each "N/A", left to the model, when not given): bpm 30 to 300, key a tonic and a mode ("F# minor"),
            time_signature 2, 3, 4 or 6 beats a bar. bars: with bpm, the song lasts exactly bars * beats * 60 /
            bpm seconds (8 bars at 124 bpm in 4/4: 15.484 s); a loop with a bpm is snapped to whole bars.
        progress: True for a progress bar on stderr, or a callable (done, total).
        """
        request = check_request(prompts, family=self.family, duration=duration, seed=seed,
                                num_variations=num_variations, loop=loop, audio_prompt=audio_prompt, longest=LONGEST,
                                turbo=self.config.turbo, lyrics=lyrics, language=language, steps=steps, cfg=cfg,
                                repaint=repaint, bpm=bpm, key=key, time_signature=time_signature, bars=bars)
        return self.generate_request(request, progress=progress)

    def _plan(self, request: Request) -> "_Plan":
        config = self.config
        p = request.song or SongParams()
        check_guidance(p.cfg, config.turbo)  # again: a local folder is known turbo only once loaded
        if p.repaint is not None:
            return self._repaint_plan(request, p)
        seconds = generated_seconds(request, LONGEST)
        frames = math.ceil(seconds * config.frames_per_second)  # latent frames, as the pipeline counts
        return _Plan(request.rows, request.duration, seconds, frames, p.lyrics, p.language,
                     p.steps or config.steps, config.cfg if p.cfg is None else p.cfg, request.loop, meter=request.meter)

    def _repaint_plan(self, request: Request, p: SongParams) -> "_Plan":
        """The source at the model's rate and channels, as long as the request's duration, padded with
        silence to whole latent frames (the VAE encodes whole frames only: the pipeline drops the last
        partial one); the caption's duration is the padded source's, as the pipeline writes it."""
        config = self.config
        audio = fit_audio(*request.audio_prompt, config.sample_rate, config.audio_channels)
        n = round(request.duration * config.sample_rate)
        frames = -(-n // config.hop)
        audio = audio[:, :n]
        audio = np.pad(audio, ((0, 0), (0, frames * config.hop - audio.shape[1])))
        span = span_frames(frames, *p.repaint, config.frames_per_second)
        return _Plan(request.rows, request.duration, frames * config.hop / config.sample_rate, frames, p.lyrics,
                     p.language, p.steps or config.steps, config.cfg if p.cfg is None else p.cfg, False,
                     source=audio, span=span, repaint=p.repaint, meter=request.meter)

    @torch.inference_mode()
    def _run(self, plan: "_Plan", report) -> tuple[torch.Tensor, dict]:
        parts, config = self._parts, self.config
        clock = StageClock(self.device)
        frames = plan.frames
        groups = _groups(plan.rows)  # rows of the same prompt share their conditions and one DiT batch
        chunks = len(windows(frames, self._window))
        # one fixed total: the source's encoder windows, the steps, then the decoder's windows
        total = (chunks if plan.source is not None else 0) + len(groups) * plan.steps + len(plan.rows) * chunks
        done = 0

        def tick(*_):
            nonlocal done
            done += 1
            if report:
                report(done, total)

        posterior = None
        if plan.source is not None:
            posterior = encode(parts.vae, torch.from_numpy(plan.source)[None], self._window, tick)  # [1, 2 C, L]
            clock.lap("encode")
        instruction = INSTRUCTION if plan.source is None else REPAINT
        states = {}
        for text in groups:
            states[text] = encode_conditions(parts, text, plan.lyrics, plan.language, plan.seconds, instruction,
                                             plan.meter)
        clock.lap("text")
        latents = [None] * len(plan.rows)
        for text, indices in groups.items():
            seeds = [plan.rows[i][1] for i in indices]
            noise = row_noise(seeded_generators(seeds), (frames, config.latent_dim)).to(self.device)
            source = None if posterior is None else source_latents(posterior, seeds, parts.transformer.dtype)
            context = context_latents(parts, frames, len(seeds), source, plan.span)
            out = sample(parts, noise, states[text], context, plan.steps, plan.cfg, tick)
            for i, row in zip(indices, out):
                latents[i] = row
        clock.lap("dit")
        audio = torch.cat([decode(parts.vae, x[None], self._window, tick, parts.decoder) for x in latents])
        clock.lap("vae")
        return normalize(audio), clock.seconds

    def _clips(self, plan: "_Plan", run: tuple[torch.Tensor, dict]) -> list[Clip]:
        audio, seconds = run
        settings = self._settings(plan.duration, plan.loop, steps=plan.steps, cfg=plan.cfg, lyrics=plan.lyrics,
                                  language=plan.language)
        if self.quantize:
            settings["quantize"] = self.quantize
        if self.lora:
            settings["lora"] = describe_lora(self.lora)
        if plan.repaint is not None:
            settings["repaint"] = list(plan.repaint)
        length = round((plan.seconds if plan.loop else plan.duration) * self.sample_rate)  # a repaint's is padded
        return clips_of_rows(plan.rows, audio.numpy()[:, :, :length], self.sample_rate, settings, seconds,
                             plan.duration if plan.loop else None)

    def _move(self, device: torch.device, dtype: torch.dtype):
        self._parts.to(device, dtype, torch.float32)
        if device.type != "cpu":
            self._parts.decoder = None  # the CPU decoder is the CPU's; _move back to the GPU goes to diffusers'


@dataclass
class _Plan:
    rows: list  # (schedule, seed) per batch row
    duration: float  # of each song
    seconds: float  # generated (a loop's is longer, a repaint's padded to whole latent frames)
    frames: int  # latent frames generated
    lyrics: str
    language: str
    steps: int
    cfg: float
    loop: bool
    source: np.ndarray | None = None  # repaint: the song (channels, frames * hop) at the model's rate
    span: tuple[int, int] | None = None  # repaint: [a, b) latent frames made anew
    repaint: tuple[float, float | None] | None = None  # repaint: the span as asked, in seconds
    meter: Meter | None = None  # bpm, key, time signature: the caption's metadata


def _groups(rows: list) -> dict[str, list[int]]:
    """prompt -> the indices of its rows, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, (schedule, _) in enumerate(rows):
        groups.setdefault(schedule[0][1], []).append(i)
    return groups
