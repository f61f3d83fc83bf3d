"""MusicGen: the one class users learn."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..audio.loops import make_loop
from ..audio.prompt import fit_audio, keep_prompt_samples
from ..clip import Clip
from ..errors import CheckpointError, InvalidParameter
from ..generation import Family, StageClock, checks_of, generated_seconds
from ..lora import describe as describe_lora
from ..quiet import quiet_loading
from ..request import WINDOW_SECONDS, Request, check_request, named
from .codec import decode_codes, encode_audio
from .conditioning import CHROMA_HOP, chroma_features
from .adapters import swap_of
from .loader import LoadedModel, load_folder
from .longform import generate_long
from .patterns import delay_offsets
from .options import CONTEXT, SamplingParams, Schedule
from .style import excerpt_start

def _finite_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class MusicGen(Family):
    """A loaded MusicGen checkpoint. `MusicGen.from_pretrained("small")`, then `generate(...)`."""

    family = "musicgen"
    quantize_choices = ("int8", "int4")

    def __init__(self, model: LoadedModel, name: str, device: torch.device, dtype: torch.dtype,
                 quantize: str | None = None, lora: list | None = None):
        self._model = model
        self.name = name
        self.device = device
        self.dtype = dtype
        self.quantize = quantize
        self.lora = lora or []  # the AdapterSpecs merged into the decoder, in order
        self._window_seconds = self.max_window  # long form's window: tests lower it, to cross windows quickly

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "small", device: str = "auto",
                        dtype: str | torch.dtype | None = None, quantize: str | None = None,
                        threads: int | None = None, lora=None, swap_lora: bool = False) -> "MusicGen":
        """Load a checkpoint: an alias (small, medium, large, stereo-small, melody, ...: `tunesmith
        models` lists them), a hub id (facebook/musicgen-small), or a local checkpoint folder.

        device: "auto" (CUDA, then Apple MPS, then the CPU), "cpu", "cuda", "cuda:1" or "mps".
        dtype: the decoder's precision, "float32", "bfloat16" or "float16"; by default bfloat16 on CUDA
            and on CPUs with native bfloat16, float32 elsewhere. T5 and EnCodec stay float32.
        quantize: "int8", weight-only int8 decoder linears (per-channel scales), about half the bytes
            of bfloat16 per step; "int4" (CPU only), weight-only int4 in groups of 64 (128 where the CPU
            kernels cannot be built), a quarter; the heads stay int8 on the kernels.
        threads: CPU threads for torch (default: torch's choice, one per core).
        lora: LoRA adapters on the decoder LM's linears (PEFT form, over transformers' MusicGen), merged once
            into its weights, in order, before they are packed or quantized: a path (a PEFT folder or one
            .safetensors file), "path@scale", (path, scale) or a list of them; scale from -2 to 2 (default 1).
        swap_lora: keep what use_lora(...) needs to swap adapter sets later (the server's per-job adapters): with
            packed or quantized CPU linears (and int8 anywhere) the decoder's float32 weights as read (memory:
            the decoder in float32 beside its packed form); plain linears keep the weights a set touches.
        """
        from ..lora import parse_specs, read_adapters

        specs = parse_specs(lora)
        adapters = read_adapters(specs)
        dev, dt, folder = cls._open(name_or_path, device, dtype, threads, quantize)
        with quiet_loading(diffusers=False):  # MusicGen's pad id warning, on every config
            model = load_folder(folder, dev, dt, quantize, [] if swap_lora else adapters, keep_base=swap_lora)
        if not swap_lora:
            return cls(model, str(name_or_path), dev, dt, quantize, specs)
        made = cls(model, str(name_or_path), dev, dt, quantize)
        made._swap = swap_of(model, dev, quantize)
        made.use_lora(specs)
        return made

    @staticmethod
    def _check_placement(device: torch.device, dtype: torch.dtype, quantize: str | None):
        if quantize == "int4" and device.type != "cpu":
            raise InvalidParameter("quantize='int4' runs on the CPU only; use 'int8' (or none) on a GPU")
        if quantize == "int4" and not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
            raise InvalidParameter(f"quantize='int4' needs a newer torch than {torch.__version__}; use 'int8'")

    @property
    def sample_rate(self) -> int:
        return self._model.config.sample_rate

    @property
    def frame_rate(self) -> int:
        return self._model.config.frame_rate

    @property
    def audio_channels(self) -> int:
        return self._model.config.decoder.audio_channels

    @property
    def is_melody(self) -> bool:
        """Melody-conditioned checkpoint (musicgen-melody family): generate(..., melody=...) works."""
        return self._model.config.decoder.melody

    def _locator_arguments(self) -> dict:
        dec = self._model.config.decoder
        return dict(dim=dec.dim, vocab_size=dec.vocab_size)

    @property
    def max_window(self) -> float:
        """Longest window the checkpoint can generate at once: 30 s, or less where it has fewer positions."""
        dec = self._model.config.decoder
        delay = max(delay_offsets(dec.n_codebooks, dec.audio_channels))
        return min(WINDOW_SECONDS, (dec.max_positions - 1 - delay) / self.frame_rate)

    def generate(self, prompts: str | Sequence[str | Schedule], *, duration: float | None = None,
                 seed: int | None = None, temperature: float = SamplingParams.temperature,
                 top_k: int = SamplingParams.top_k, top_p: float = SamplingParams.top_p,
                 cfg: float = SamplingParams.cfg, num_variations: int = 1, audio_prompt=None, melody=None, context: float = CONTEXT,
                 loop: bool = False, progress: bool | Callable[[int, int], None] = False, style=None,
                 cfg_beta: float | None = None, style_excerpt: float | None = None,
                 style_quantizers: int | None = None, style_start: float | None = None, bpm: float | None = None,
                 key: str | None = None, time_signature: int | None = None, bars: int | None = None) -> list[Clip]:
        """One Clip per prompt and variation (prompt-major order), all in one batch.

        prompts: a text, a schedule [(start_second, text), ...] whose text changes over time, or a list
            of them. An empty text is refused.
        duration: seconds (default 10), from 0.02 (one frame) up to 3600; past the model's 30 s window the piece is
            made window by window, each conditioned on the last `context` seconds already made.
        seed: makes the output reproducible (same device and dtype); random when None. Variation v of
            every prompt uses seed + v, and each clip reports the seed that reproduces it on its own.
        temperature: 0 is greedy; top_k: keep the k most likely codes (0: all); top_p: nucleus sampling
            after top-k (0: off); cfg: classifier-free guidance, uncond + cfg * (cond - uncond) (1: off).
        num_variations: clips per prompt (1 to 64), in the same batch.
        audio_prompt: a path, a Clip or (array, sample_rate) to continue; the clip starts with it and
            lasts `duration` in total.
        melody: a tune to follow (path, Clip or (array, sample_rate)), for melody models only.
        context: long pieces: seconds of the piece so far that condition each new window (0 to 30).
        loop: each clip is a seamless loop of exactly `duration` (a little more is generated).
        progress: True for a progress bar on stderr, or a callable (done, total).
        style: a reference whose timbre, groove and texture to take (path, Clip or (array, sample_rate)),
            for style models only (-m style); with a style, prompts may be "" (or None): the style alone.
        cfg_beta: with text and style, uncond + cfg * (style + cfg_beta * (cond - style) - uncond) (1 to
            100, default 5): higher follows the text more. Without text it is ordinary guidance.
        style_excerpt: seconds of the reference the model hears (1.5 to 4.5, default 3).
        style_quantizers: style codebooks used (1 to 6, default 3): fewer copy the reference less closely.
        style_start: where the excerpt starts, in seconds; by default each clip's seed draws it.
        bpm, key: written into each prompt as MusicGen was trained on them ("<prompt>. key: C major. bpm: 124.0");
            key is a tonic and a mode ("F# minor"). time_signature (2, 3, 4 or 6 beats a bar, default 4) and
            bars: with bpm, bars sets the duration to exactly bars * beats * 60 / bpm seconds; a loop with a
            bpm is snapped to whole bars.
        """
        request = check_request(prompts, duration=duration, seed=seed, temperature=temperature, top_k=top_k,
                                top_p=top_p, cfg=cfg, num_variations=num_variations, audio_prompt=audio_prompt,
                                melody=melody, context=context, loop=loop, style=style, cfg_beta=cfg_beta,
                                style_excerpt=style_excerpt, style_quantizers=style_quantizers,
                                style_start=style_start, bpm=bpm, key=key, time_signature=time_signature, bars=bars)
        return self.generate_request(request, progress=progress)

    def _plan(self, request: Request) -> "_Plan":
        """The request's checks that depend on this model, and its frames, windows and conditions."""
        if not _finite_number(self._window_seconds) or not 0 < self._window_seconds <= self.max_window:
            raise InvalidParameter(f"_window_seconds must be in (0, {self.max_window:g}], got {self._window_seconds}")
        if request.context >= self._window_seconds:
            raise InvalidParameter(f"{named('context')} must be less than this model's {self._window_seconds:g} s "
                                   f"window, got {request.context:g}")
        hop = self._model.config.hop_length
        duration = request.duration
        n_frames = round(generated_seconds(request) * self.frame_rate)
        if n_frames < 1:
            raise InvalidParameter(f"{named('duration')} {duration:g} s is shorter than one frame "
                                   f"({1 / self.frame_rate:g} s)")
        prompt_audio = None
        if request.audio_prompt is not None:
            prompt_audio = fit_audio(*request.audio_prompt, self.sample_rate, self.audio_channels)
            prompt_audio = prompt_audio[:, : prompt_audio.shape[1] // hop * hop]  # whole codec frames
            if prompt_audio.shape[1] == 0:
                raise InvalidParameter("the audio prompt is shorter than one codec frame: nothing to continue")
            if prompt_audio.shape[1] // hop >= n_frames:
                raise InvalidParameter(f"the audio prompt lasts {prompt_audio.shape[1] / self.sample_rate:.2f} s: "
                                       f"duration {duration:g} s leaves nothing to generate")
        chroma = None
        if request.melody is not None:
            if not self.is_melody:
                raise InvalidParameter(f"{self.name} cannot follow a melody: use a melody model "
                                       "(melody, melody-large, stereo-melody, stereo-melody-large)")
            tune = fit_audio(*request.melody, self.sample_rate, 1)[0]
            chroma = chroma_features(torch.from_numpy(tune), self.sample_rate, self._model.config.decoder.chroma_dim)
        style, params = self._style_plan(request), request.sampling
        if style is not None and any(text for schedule, _ in request.rows for _, text in schedule):
            params = dataclasses.replace(params, cfg_beta=request.style.cfg_beta)  # three rows per prompt
        return _Plan(request.rows, n_frames, params, duration, request.loop, prompt_audio,
                     round(request.context * self.frame_rate), round(self._window_seconds * self.frame_rate), chroma,
                     style)

    @property
    def is_style(self) -> bool:
        """MusicGen-Style checkpoint: generate(..., style=...) works."""
        return self._model.style is not None

    def _style_plan(self, request: Request) -> "_StylePlan | None":
        """The style request against this model: one excerpt per row, from its seed or style_start."""
        wanted = request.style
        if wanted is None:
            return None
        if not self.is_style:
            raise InvalidParameter(f"{self.name} cannot take a style reference: use a MusicGen-Style model (-m style)")
        cfg = self._model.style.config
        excerpt = wanted.excerpt or cfg.excerpt
        quantizers = wanted.quantizers or cfg.eval_q
        if quantizers > cfg.n_q:
            raise InvalidParameter(f"{named('style_quantizers')} must be at most {cfg.n_q} for this model, "
                                   f"got {quantizers}")
        reference = fit_audio(*wanted.audio, cfg.sample_rate, 1)[0]
        length = int(excerpt * cfg.sample_rate)
        seconds = reference.shape[0] / cfg.sample_rate
        if reference.shape[0] < length:
            raise InvalidParameter(f"the style reference lasts {seconds:.2f} s, shorter than the {excerpt:g} s "
                                   f"excerpt: give a longer one, or a shorter {named('style_excerpt')} (1.5 to 4.5 s)")
        if wanted.start is not None and round(wanted.start * cfg.sample_rate) + length > reference.shape[0]:
            raise InvalidParameter(f"{named('style_start')} {wanted.start:g} s leaves less than the {excerpt:g} s "
                                   f"excerpt of the {seconds:.2f} s style reference")
        starts = [round(wanted.start * cfg.sample_rate) if wanted.start is not None
                  else excerpt_start(reference.shape[0], length, seed) for _, seed in request.rows]
        excerpts = np.stack([reference[s: s + length] for s in starts])  # [B, samples]
        for s, e in zip(starts, excerpts):
            if np.sqrt(np.mean(e.astype(np.float64) ** 2)) < 1e-4:
                raise InvalidParameter(f"the style excerpt at {s / cfg.sample_rate:.2f} s is silent: choose "
                                       f"another with {named('style_start')}")
        return _StylePlan(excerpts, quantizers, excerpt, [s / cfg.sample_rate for s in starts])

    @torch.inference_mode()
    def _run(self, plan: "_Plan", report) -> tuple[torch.Tensor, dict]:
        """-> (audio [B, C, samples], seconds spent in each stage)."""
        model = self._model
        clock = StageClock(self.device)
        prefix = None
        if plan.prompt_audio is not None:
            audio = torch.from_numpy(plan.prompt_audio).to(self.device)
            prefix = encode_audio(model.codec, audio, self.audio_channels)
            if prefix.shape[1] != model.config.decoder.n_codebooks:
                raise CheckpointError(f"the codec makes {prefix.shape[1]} codebooks but the decoder reads "
                                      f"{model.config.decoder.n_codebooks}: the checkpoint is inconsistent")
            prefix = prefix.expand(len(plan.rows), -1, -1)
            clock.lap("prompt")
        seeds = torch.tensor([s for _, s in plan.rows], dtype=torch.long, device=self.device)
        chroma = None if plan.chroma is None else plan.chroma.to(self.device)
        style = None
        if plan.style is not None:  # computed once: every window of a long piece keeps these tokens
            style = model.style.tokens(plan.style.excerpts, plan.style.quantizers)  # [B, T, dim]
            clock.lap("style")
        codes = generate_long(model.lm, clock.timed("text", model.text.encode), [s for s, _ in plan.rows],
                              plan.n_frames, self.frame_rate, plan.params, seeds, plan.window,
                              plan.context, prefix, report, chroma, self.sample_rate / CHROMA_HOP, style)
        clock.lap("lm")  # less the text encoding done inside, per window
        audio = decode_codes(model.codec, codes, model.config.decoder.audio_channels)
        clock.lap("codec")
        return audio, clock.seconds

    def _clips(self, plan: "_Plan", run: tuple[torch.Tensor, dict]) -> list[Clip]:
        audio, seconds = run
        p = plan.params
        settings = self._settings(plan.duration, plan.loop, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p,
                                  cfg=p.cfg)
        settings["quantize"] = self.quantize
        if self.lora:
            settings["lora"] = describe_lora(self.lora)
        if plan.style is not None:
            settings.update(cfg_beta=p.cfg_beta, style_excerpt=plan.style.excerpt,
                            style_quantizers=plan.style.quantizers)
        audios = []
        for a in audio.cpu().numpy():
            if plan.loop:
                a = make_loop(a, self.sample_rate, plan.duration)
            if plan.prompt_audio is not None:
                a = keep_prompt_samples(plan.prompt_audio, a, self.sample_rate)
            audios.append(a)
        clips = []
        checks = checks_of(audios, self.sample_rate)
        for row_index, ((schedule, seed), a, check) in enumerate(zip(plan.rows, audios, checks)):
            row = dict(settings, schedule=schedule) if len(schedule) > 1 else settings
            if plan.style is not None:
                row = dict(row, style_start=plan.style.starts[row_index])
            clips.append(Clip(a, self.sample_rate, schedule_text(schedule), seed, dict(row), check, dict(seconds)))
        return clips

    def _move(self, device: torch.device, dtype: torch.dtype):
        self._model.to(device, dtype)


@dataclass
class _Plan:
    rows: list  # (schedule, seed) per batch row
    n_frames: int
    params: SamplingParams
    duration: float
    loop: bool
    prompt_audio: "np.ndarray | None"  # (channels, samples) at the model's rate, whole frames
    context: int  # frames
    window: int  # frames
    chroma: torch.Tensor | None = None  # [F, 12] one-hot chroma of the melody to follow
    style: "_StylePlan | None" = None


@dataclass
class _StylePlan:
    excerpts: np.ndarray  # [B, samples] mono at the model's rate, one per row
    quantizers: int
    excerpt: float  # seconds
    starts: list[float]  # seconds, per row


def schedule_text(schedule: Schedule) -> str:
    if len(schedule) == 1:
        return schedule[0][1]
    return " | ".join(f"{t:g}s: {text}" for t, text in schedule)
