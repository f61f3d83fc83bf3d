"""MusicGen: the one class users learn."""

from __future__ import annotations

import contextlib
import logging
import math
import secrets
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from .audio.checks import check_audio
from .audio.loops import loop_overhang, make_loop
from .clip import Clip
from .device import pick_device, pick_dtype
from .engine.codec import decode_codes
from .engine.generate import generate_codes
from .engine.hub import resolve
from .engine.loader import LoadedModel, load_folder
from .engine.patterns import delay_offsets
from .engine.sampling import MAX_SEED, SamplingParams
from .errors import InvalidParameter

log = logging.getLogger("tunesmith")

WINDOW_SECONDS = 30.0  # MusicGen was trained on 30 s windows


@contextlib.contextmanager
def _quiet_transformers():
    """transformers warns about MusicGen's pad id (= vocab size) on every config load: not news to users."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _finite_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


class MusicGen:
    """A loaded MusicGen checkpoint. `MusicGen.from_pretrained("small")`, then `generate(...)`."""

    def __init__(self, model: LoadedModel, name: str, device: torch.device, dtype: torch.dtype,
                 quantize: str | None = None):
        self._model = model
        self.name = name
        self.device = device
        self.dtype = dtype
        self.quantize = quantize

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = "small", device: str = "auto",
                        dtype: str | torch.dtype | None = None, quantize: str | None = None,
                        threads: int | None = None) -> "MusicGen":
        """An alias (small, medium, large, stereo-small, ...), a hub id, or a local checkpoint folder.

        quantize="int8": weight-only int8 decoder linears (per-channel scales), about half the bytes
        of bfloat16 per step. threads: CPU threads for torch (default: torch's choice, one per core).
        """
        if quantize not in (None, "int8"):
            raise InvalidParameter(f"quantize must be None or 'int8', got {quantize!r}")
        if threads is not None:
            if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
                raise InvalidParameter(f"threads must be a whole number >= 1, got {threads!r}")
            torch.set_num_threads(threads)
        dev = pick_device(device)
        dt = pick_dtype(dtype, dev)
        folder = resolve(name_or_path)
        with _quiet_transformers():
            model = load_folder(folder, dev, dt, quantize)
        return cls(model, str(name_or_path), dev, dt, quantize)

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
    def max_duration(self) -> float:
        """Longest clip in one window: 30 s, or less where the checkpoint has fewer positions."""
        dec = self._model.config.decoder
        delay = max(delay_offsets(dec.n_codebooks, dec.audio_channels))
        return min(WINDOW_SECONDS, (dec.max_positions - 1 - delay) / self.frame_rate)

    def generate(self, prompts: str | Sequence[str], *, duration: float = 10.0, seed: int | None = None,
                 temperature: float = 1.0, top_k: int = 250, top_p: float = 0.0, cfg: float = 3.0,
                 num_variations: int = 1, loop: bool = False,
                 progress: bool | Callable[[int, int], None] = False) -> list[Clip]:
        """One Clip per prompt and variation (prompt-major order), all in one batch.

        Variation v of every prompt uses seed + v; a clip is reproduced by its own seed alone.
        loop=True: each clip is a seamless loop of exactly `duration` (a little more is generated).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts) if prompts is not None else []
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise InvalidParameter("prompts must be a text or a non-empty list of texts")
        if not isinstance(loop, bool):
            raise InvalidParameter(f"loop must be True or False, got {loop!r}")
        n_frames = self._frames_for(duration, loop)
        params = SamplingParams(temperature, top_k, top_p, cfg).validate()
        if not isinstance(num_variations, int) or isinstance(num_variations, bool) or not 1 <= num_variations <= 64:
            raise InvalidParameter(f"num_variations must be a whole number from 1 to 64, got {num_variations}")
        if seed is None:
            seed = secrets.randbelow(MAX_SEED + 1)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
            raise InvalidParameter(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed}")
        if not (isinstance(progress, bool) or callable(progress)):
            raise InvalidParameter("progress must be True, False or a callable (done, total)")

        rows = [(p, (seed + v) % (MAX_SEED + 1)) for p in prompts for v in range(num_variations)]
        report = _progress_reporter(progress)
        try:
            run = self._run(rows, n_frames, params, report)
            clips = self._clips(rows, run, duration, params, loop)
            if self.device.type != "cpu" and not all(c.check.ok for c in clips):
                problems = next(c.check.summary() for c in clips if not c.check.ok)
                raise _DeviceOutputError(problems)
        except (RuntimeError, _DeviceOutputError) as err:
            if self.device.type == "cpu":
                raise
            log.warning("generation on %s failed (%s); retrying once on the CPU", self.device, _one_line(err))
            clips = self._retry_on_cpu(rows, n_frames, params, report, duration, loop)
        finally:
            if hasattr(report, "close"):
                report.close()
        return clips

    def _frames_for(self, duration, loop: bool = False) -> int:
        if not _finite_number(duration) or duration <= 0:
            raise InvalidParameter(f"duration must be a positive number of seconds, got {duration}")
        extra = loop_overhang(duration) if loop else 0.0
        if duration + extra > self.max_duration + 1e-9:
            what = f"a {duration:g} s loop (plus {extra:.2f} s to loop on)" if loop else f"duration {duration:g} s"
            raise InvalidParameter(f"{what} is longer than the model's {self.max_duration:g} s window "
                                   "(longer pieces are not supported yet)")
        n_frames = round((duration + extra) * self.frame_rate)
        if n_frames < 1:
            raise InvalidParameter(f"duration {duration:g} s is shorter than one frame ({1 / self.frame_rate:g} s)")
        return n_frames

    @torch.inference_mode()
    def _run(self, rows, n_frames, params, report) -> tuple[torch.Tensor, dict]:
        """-> (audio [B, C, samples], seconds spent in each stage)."""
        model = self._model
        clock = _StageClock(self.device)
        states, mask = model.text.encode([p for p, _ in rows])
        clock.lap("text")
        seeds = torch.tensor([s for _, s in rows], dtype=torch.long, device=self.device)
        codes = generate_codes(model.lm, states, mask, n_frames, params, seeds, report)
        clock.lap("lm")
        audio = decode_codes(model.codec, codes, model.config.decoder.audio_channels)
        clock.lap("codec")
        return audio, clock.seconds

    def _clips(self, rows, run: tuple[torch.Tensor, dict], duration, params: SamplingParams,
               loop: bool) -> list[Clip]:
        audio, seconds = run
        settings = dict(model=self.name, duration=duration, temperature=params.temperature, top_k=params.top_k,
                        top_p=params.top_p, cfg=params.cfg, device=str(self.device), dtype=str(self.dtype)[6:],
                        quantize=self.quantize, loop=loop)
        audio = [make_loop(a, self.sample_rate, duration) if loop else a for a in audio.cpu().numpy()]
        return [Clip(a, self.sample_rate, prompt, seed, dict(settings), check_audio(a), dict(seconds))
                for (prompt, seed), a in zip(rows, audio)]

    def _retry_on_cpu(self, rows, n_frames, params, report, duration, loop) -> list[Clip]:
        home, home_dtype = self.device, self.dtype
        cpu = torch.device("cpu")
        self._model.to(cpu, torch.float32)
        self.device, self.dtype = cpu, torch.float32
        try:
            return self._clips(rows, self._run(rows, n_frames, params, report), duration, params, loop)
        finally:
            self._model.to(home, home_dtype)
            self.device, self.dtype = home, home_dtype


class _StageClock:
    """Wall seconds per stage, synchronising the GPU so that each stage is charged its own work."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.seconds[stage] = now - self._last
        self._last = now


class _DeviceOutputError(Exception):
    pass


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _progress_reporter(progress):
    """True -> a tqdm bar on stderr; a callable is used as is; False -> None."""
    if progress is False:
        return None
    if callable(progress):
        return progress
    from tqdm import tqdm

    class Bar:
        def __init__(self):
            self.bar = None

        def __call__(self, done: int, total: int):
            if self.bar is None:
                self.bar = tqdm(total=total, unit="step", file=sys.stderr, desc="generating")
            self.bar.update(done - self.bar.n)

        def close(self):
            if self.bar is not None:
                self.bar.close()

    return Bar()
