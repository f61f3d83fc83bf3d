"""One generation request, checked whole before any model loads.

The Python API, the CLI and the server all call check_request, so a value is refused the same way
everywhere, before a download or a load can hide the mistake. Each message names the parameter and
its command-line flag: `temperature (--temperature) must be a number >= 0 (0 is greedy), got -1`.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InvalidParameter, TunesmithError
from .musicgen.longform import Schedule
from .musicgen.sampling import MAX_SEED, SamplingParams

log = logging.getLogger("tunesmith")

WINDOW_SECONDS = 30.0  # MusicGen was trained on 30 s windows
MAX_DURATION = 3600.0  # long form: one hour is plenty, and keeps typos like 60000 from running for days
FRAME_SECONDS = 0.02  # one codec frame (50 per second): the shortest clip, and the shortest audio input
MAX_VARIATIONS = 64

FLAGS = {
    "prompts": "PROMPT", "duration": "-d", "seed": "--seed", "num_variations": "-n", "temperature": "--temperature",
    "top_k": "--top-k", "top_p": "--top-p", "cfg": "--cfg", "context": "--context", "loop": "--loop",
    "audio_prompt": "--continue", "melody": "--melody", "threads": "--threads",
}


def named(param: str) -> str:
    """'top_k (--top-k)': the parameter as the API and the CLI spell it."""
    flag = FLAGS.get(param)
    return f"{param} ({flag})" if flag else param


def real(value, param: str, expected: str, ok=lambda v: True) -> float:
    """`value` as a float: any finite real number (numpy's too) for which ok(value) holds."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and ok(float(value)):
        return float(value)
    raise InvalidParameter(f"{named(param)} must be {expected}, got {value}")


def whole(value, param: str, expected: str, ok=lambda v: True) -> int:
    """`value` as an int: any integer (numpy's too) for which ok(value) holds."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and ok(int(value)):
        return int(value)
    raise InvalidParameter(f"{named(param)} must be {expected}, got {value}")


@dataclass(frozen=True)
class Request:
    """Everything one generate call needs, checked; what depends on the model is checked by the model."""

    schedules: list[Schedule]  # one per prompt: [(start_second, text), ...]
    duration: float
    seed: int  # of each prompt's first variation; variation v uses seed + v
    num_variations: int
    sampling: SamplingParams
    context: float
    loop: bool
    audio_prompt: tuple[np.ndarray, int] | None = None  # (audio (channels, samples) float32, rate) to continue
    melody: tuple[np.ndarray, int] | None = None  # the tune to follow, likewise

    @property
    def rows(self) -> list[tuple[Schedule, int]]:
        """(schedule, seed) per batch row, prompt-major."""
        return [(s, (self.seed + v) % (MAX_SEED + 1)) for s in self.schedules for v in range(self.num_variations)]


def check_request(prompts, *, duration=10.0, seed=None, temperature=1.0, top_k=250, top_p=0.0, cfg=3.0,
                  num_variations=1, audio_prompt=None, melody=None, context=12.0, loop=False) -> Request:
    """Every value checked and normalised (numpy numbers become Python's, files are read); a random
    seed is drawn here when none is given, so that callers can name files after it."""
    duration = real(duration, "duration", "a positive number of seconds", lambda v: v > 0)
    if duration > MAX_DURATION:
        raise InvalidParameter(f"{named('duration')} {duration:g} s is longer than the {MAX_DURATION:g} s "
                               "tunesmith makes")
    if duration < FRAME_SECONDS:
        raise InvalidParameter(f"{named('duration')} {duration:g} s is shorter than one frame ({FRAME_SECONDS:g} s)")
    schedules = [check_schedule(p, duration) for p in _prompt_list(prompts)]
    num_variations = whole(num_variations, "num_variations", f"a whole number from 1 to {MAX_VARIATIONS}",
                           lambda v: 1 <= v <= MAX_VARIATIONS)
    if seed is None:  # leave room for the variations' seeds before they wrap around
        seed = secrets.randbelow(MAX_SEED + 2 - num_variations)
    seed = whole(seed, "seed", f"a whole number from 0 to {MAX_SEED}", lambda v: 0 <= v <= MAX_SEED)
    sampling = SamplingParams(
        temperature=real(temperature, "temperature", "a number >= 0 (0 is greedy)", lambda v: v >= 0),
        top_k=whole(top_k, "top_k", "a whole number >= 0 (0 is off)", lambda v: v >= 0),
        top_p=real(top_p, "top_p", "between 0 (off) and 1", lambda v: 0 <= v <= 1),
        cfg=real(cfg, "cfg", "between 1 (no guidance) and 100", lambda v: 1 <= v <= 100))
    context = real(context, "context", f"greater than 0 and less than the {WINDOW_SECONDS:g} s window",
                   lambda v: 0 < v < WINDOW_SECONDS)
    if not isinstance(loop, (bool, np.bool_)):
        raise InvalidParameter(f"{named('loop')} must be True or False, got {loop!r}")
    if loop and audio_prompt is not None:
        raise InvalidParameter("a loop cannot continue an audio prompt: use one or the other")
    return Request(schedules, duration, seed, num_variations, sampling, context, bool(loop),
                   audio_input(audio_prompt, "audio_prompt"), audio_input(melody, "melody"))


def _prompt_list(prompts) -> list:
    if isinstance(prompts, str) or is_schedule(prompts):
        return [prompts]
    if isinstance(prompts, (list, tuple)) and prompts:
        return list(prompts)
    raise InvalidParameter("prompts must be a text, a schedule, or a non-empty list of them")


def is_schedule(value) -> bool:
    """[(start_second, text), ...]: pairs led by a number (a list of prompts holds texts or schedules)."""
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(e, (list, tuple)) and len(e) == 2 and isinstance(e[0], numbers.Real)
        and not isinstance(e[0], bool) and math.isfinite(e[0]) for e in value)


def _text(text: str) -> str:
    if not text.strip():
        raise InvalidParameter("a prompt is empty: describe the music in words, e.g. \"calm lofi piano, 80 bpm\"")
    return text


def check_schedule(prompt, duration: float) -> Schedule:
    """A text -> [(0, text)]; a schedule is checked: starts at 0, times increasing and inside the piece."""
    if isinstance(prompt, str):
        return [(0.0, _text(prompt))]
    if not is_schedule(prompt) or not all(isinstance(text, str) for _, text in prompt):
        raise InvalidParameter("each prompt must be a text or a schedule of (start_second, text) pairs")
    times = [float(t) for t, _ in prompt]
    if times[0] != 0:
        raise InvalidParameter(f"a prompt schedule must start at 0 s, not {times[0]:g} s")
    if any(b <= a for a, b in zip(times, times[1:])):
        raise InvalidParameter(f"prompt schedule times must increase: {', '.join(f'{t:g}' for t in times)}")
    if times[-1] >= duration:
        raise InvalidParameter(f"prompt schedule time {times[-1]:g} s is not inside the {duration:g} s piece")
    return [(t, _text(text)) for t, (_, text) in zip(times, prompt)]


PURPOSE = {"audio_prompt": "there is nothing to continue", "melody": "there is no tune to follow"}


def audio_input(value, param: str) -> tuple[np.ndarray, int] | None:
    """A path, a Clip or (array, sample_rate) -> ((channels, samples) float32, rate), refused with one
    line when it is empty, shorter than a frame, silent or not finite."""
    from .audio.io import read_audio

    if value is None:
        return None
    if isinstance(value, (str, Path)):
        audio, rate = read_audio(value)
        name = str(value)
    elif hasattr(value, "audio") and hasattr(value, "sample_rate"):
        audio, rate, name = value.audio, value.sample_rate, f"the {param} clip"
    elif isinstance(value, tuple) and len(value) == 2:
        audio, rate, name = value[0], value[1], f"the {param} audio"
        audio = np.asarray(audio)
        if audio.ndim == 2 and audio.shape[1] in (1, 2) and audio.shape[0] > 2:  # (samples, channels)
            audio = audio.T
    else:
        raise InvalidParameter(f"{named(param)} must be a file path, a Clip, or (array, sample_rate)")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2 or audio.shape[0] == 0 or not isinstance(rate, numbers.Integral) or rate <= 0:
        raise InvalidParameter(f"{named(param)} arrays must be (channels, samples) or (samples,), "
                               "with a positive whole sample rate")
    if audio.shape[1] == 0:
        raise TunesmithError(f"{name} is empty: {PURPOSE[param]}")
    if audio.shape[1] < FRAME_SECONDS * rate:
        raise TunesmithError(f"{name} lasts {audio.shape[1] / rate * 1000:.1f} ms, less than one frame "
                             f"({FRAME_SECONDS * 1000:g} ms): {PURPOSE[param]}")
    if not np.isfinite(audio).all():
        raise TunesmithError(f"{name} holds NaN or infinite samples")
    if np.sqrt(np.mean(audio.astype(np.float64) ** 2)) < 1e-4:  # -80 dBFS
        raise TunesmithError(f"{name} is silent: {PURPOSE[param]}")
    return audio, int(rate)


def check_threads(threads) -> int | None:
    """CPU threads for torch: None (one per core) or a whole number >= 1; more than the cores is allowed
    (containers can under-report them) but said once, since it usually slows generation down."""
    if threads is None:
        return None
    threads = whole(threads, "threads", "a whole number >= 1", lambda v: v >= 1)
    cores = os.cpu_count() or 1
    if threads > cores:
        log.warning("%d threads on %d cores: more threads than cores usually makes generation slower", threads, cores)
    return threads
