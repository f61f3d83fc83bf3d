"""One generation request, checked whole before any model loads.

The Python API, the CLI and the server all call check_request, so a value is refused the same way
everywhere, before a download or a load can hide the mistake. The common values are checked here; each
family's own options by its options module (<family>/options.py), found in the family table. A refusal
is an InvalidParameter that names its parameter (.param) and that each shell renders in its own words:
the API and the CLI write the parameter and its flag, `temperature (--temperature) must be a number >= 0
(0 is greedy), got -1`, the server the JSON field.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import secrets
from dataclasses import dataclass

import numpy as np

from .acestep.options import SongParams, check_guidance, read_lyrics  # noqa: F401 (read here by the model)
from .audio.meter import Meter, check_meter
from .errors import InvalidParameter
from .family import FAMILIES
from .musicgen.options import (CFG_BETA, MAX_SEED, WINDOW_SECONDS, SamplingParams, Schedule,  # noqa: F401
                               StyleRequest)
from .params import (API_NAMES, FRAME_SECONDS, MAX_DURATION, MAX_STEPS, NOT_TEXT, Asked,  # noqa: F401
                     audio_input, check_text, real, refuse, shown_seconds, text_problem, whole)
from .stable_audio.options import DiffusionParams  # noqa: F401 (the model reads it here)
from .threads import available_cores

log = logging.getLogger("tunesmith")

DEFAULT_DURATION = 10.0  # seconds, when none is given (a repaint keeps its source's length)
MAX_VARIATIONS = 64

FAMILY_NAMES = {spec.name: spec.display for spec in FAMILIES.values()}
SHORTEST = {spec.name: spec.shortest for spec in FAMILIES.values() if spec.shortest is not None}  # seconds
# Each family's own options and their defaults (None: the model's own default, read from its checkpoint).
OPTIONS = {spec.name: spec.options for spec in FAMILIES.values()}


def named(param: str) -> str:
    """'top_k (--top-k)': the parameter as the API and the CLI spell it."""
    return API_NAMES.get(param, param)


@dataclass(frozen=True)
class Request:
    """Everything one generate call needs, checked; what depends on the model is checked by the model."""

    schedules: list[Schedule]  # one per prompt: [(start_second, text), ...]
    duration: float
    seed: int  # of each prompt's first variation; variation v uses seed + v
    num_variations: int
    sampling: SamplingParams | None  # MusicGen's
    context: float
    loop: bool
    audio_prompt: tuple[np.ndarray, int] | None = None  # (audio (channels, samples) float32, rate): MusicGen
    #   continues it; Stable Audio starts from it (audio-to-audio); ACE-Step repaints a span of it
    melody: tuple[np.ndarray, int] | None = None  # the tune to follow, likewise
    family: str = "musicgen"
    diffusion: DiffusionParams | None = None  # Stable Audio's
    song: SongParams | None = None  # ACE-Step's
    seeds: tuple[int, ...] | None = None  # one per schedule, each its own first seed (batch_requests)
    style: StyleRequest | None = None  # MusicGen-Style's reference
    meter: Meter | None = None  # tempo, key, meter, bars: ACE-Step's metadata; already in the others' prompts

    @property
    def rows(self) -> list[tuple[Schedule, int]]:
        """(schedule, seed) per batch row, prompt-major."""
        firsts = self.seeds or [self.seed] * len(self.schedules)
        return [(s, seed) for s, first in zip(self.schedules, firsts)
                for seed in variation_seeds(first, self.num_variations)]


def variation_seeds(seed: int, num_variations: int) -> list[int]:
    """The seed of each variation of a prompt whose first variation has `seed` (as Request.rows counts them)."""
    return [(seed + v) % (MAX_SEED + 1) for v in range(num_variations)]


def batch_requests(requests: list[Request]) -> Request:
    """One request whose rows are the given requests' rows, in order, each keeping its own seed: every
    family seeds each row apart, so each request's clips are those it would get alone. The requests
    must agree on everything else (the server batches only such jobs)."""
    first = requests[0]
    if len(requests) == 1:
        return first
    if any(r.audio_prompt is not None or r.melody is not None or r.style is not None for r in requests):
        raise InvalidParameter("requests with audio inputs are generated alone, not batched")
    same = dataclasses.replace(first, schedules=[], seed=0, num_variations=1, seeds=None)
    if any(dataclasses.replace(r, schedules=[], seed=0, num_variations=1, seeds=None) != same for r in requests):
        raise InvalidParameter("requests batched together must differ only in prompts, seeds and variations")
    rows = [row for r in requests for row in r.rows]
    return dataclasses.replace(first, schedules=[s for s, _ in rows], seed=rows[0][1], num_variations=1,
                               seeds=tuple(seed for _, seed in rows))


def check_request(prompts, *, family="musicgen", duration=None, seed=None, num_variations=1, loop=False,
                  audio_prompt=None, longest=None, turbo=False, bpm=None, key=None, time_signature=None, bars=None,
                  **options) -> Request:
    """Every value checked and normalised (numpy numbers become Python's, files are read); a random
    seed is drawn here when none is given, so that callers can name files after it.

    family: a name of the family table ("musicgen", "stable_audio", "acestep"); `options` are that family's
    own (OPTIONS lists them), and an option of another family is refused. duration None: DEFAULT_DURATION,
    or the source's length for an ACE-Step repaint. longest: the model's longest clip in seconds, when it
    has one (Stable Audio, ACE-Step); MusicGen makes long pieces window by window, up to MAX_DURATION.
    turbo: the model has its guidance distilled in (a turbo ACE-Step), so a cfg is refused before it loads.
    bpm, key, time_signature, bars: every family's (tunesmith.params.METER, checked by audio.meter.check_meter):
    bars (with bpm) set the duration exactly, a loop at a tempo is whole bars long; the family's meter_prompt
    writes tempo and key into the prompt, where it has one."""
    spec = FAMILIES.get(family) if isinstance(family, str) else None
    if spec is None:
        raise refuse("family must be one of {families}, got {family!r}", families=", ".join(FAMILIES), family=family)
    try:
        meter = dict(bpm=bpm, key=key, time_signature=time_signature, bars=bars)
        return _checked(spec, prompts, duration, seed, num_variations, loop, audio_prompt, longest, turbo, meter,
                        options)
    except InvalidParameter as err:  # named as this family's requests name them (its audio input's flag)
        err.names = spec.names
        raise


def _checked(spec, prompts, duration, seed, num_variations, loop, audio_prompt, longest, turbo, meter_values,
             options) -> Request:
    foreign = sorted(set(options) - set(spec.params))
    if foreign:
        name = foreign[0]
        field = f"{{{name}}}" if name.isidentifier() else name.replace("{", "{{").replace("}", "}}")
        raise refuse(field + " is not an option of {display} models (theirs: {theirs})", name, display=spec.display,
                     theirs=", ".join(spec.params))
    options = {**spec.options, **options}
    from_source = False  # the duration is the audio input's (a repaint's song): bars cannot set it
    if spec.length is not None:
        given = audio_prompt
        audio_prompt, duration = spec.length(audio_prompt, duration, longest, loop, options)
        from_source = audio_prompt is not given
    meter, duration = check_meter(**meter_values, duration=duration, default=DEFAULT_DURATION, loop=loop,
                                  repaint=from_source, shortest=spec.shortest or 0.0)
    if duration is None:
        duration = DEFAULT_DURATION
    duration = real(duration, "duration", "a positive number of seconds", lambda v: v > 0)
    limit = MAX_DURATION if longest is None else longest
    if duration > limit:
        whose = "tunesmith makes" if longest is None else "this model makes at once"
        raise refuse("{duration} {duration_s:g} s is longer than the {limit} s {whose}", "duration",
                     duration_s=duration, limit=shown_seconds(limit), whose=whose)
    if spec.shortest is not None and duration < spec.shortest:
        raise refuse("{duration} {duration_s:g} s is shorter than the {shortest} s that {display} models make at "
                     "least", "duration", duration_s=duration, shortest=shown_seconds(spec.shortest, "least"),
                     display=spec.display)
    if duration < FRAME_SECONDS:
        raise refuse("{duration} {duration_s:g} s is shorter than one frame ({frame:g} s)", "duration",
                     duration_s=duration, frame=FRAME_SECONDS)
    no_text = any(options[name] is not None for name, option in spec.params.items() if option.steers)
    if no_text and (prompts is None or prompts == ""):
        prompts = ""  # a style alone may steer
    schedules = [check_schedule(p, duration, no_text) for p in _prompt_list(prompts)]
    num_variations = whole(num_variations, "num_variations", f"a whole number from 1 to {MAX_VARIATIONS}",
                           lambda v: 1 <= v <= MAX_VARIATIONS)
    if seed is None:  # leave room for the variations' seeds before they wrap around
        seed = secrets.randbelow(MAX_SEED + 2 - num_variations)
    seed = whole(seed, "seed", f"a whole number from 0 to {MAX_SEED}", lambda v: 0 <= v <= MAX_SEED)
    if not isinstance(loop, (bool, np.bool_)):
        raise refuse("{loop} must be True or False, got {value!r}", "loop", value=loop)
    if meter is not None and spec.meter_prompt is not None:
        schedules = [[(t, spec.meter_prompt(text, meter)) for t, text in schedule] for schedule in schedules]
        if meter.time_signature is not None:
            log.info("%s models were not trained on a meter: time_signature only sets the bars' length", spec.display)
    own = spec.check(Asked(schedules, duration, bool(loop), audio_prompt, turbo), **options)
    return Request(schedules=schedules, duration=duration, seed=seed, num_variations=num_variations, loop=bool(loop),
                   family=spec.name, meter=meter, **own)


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


def _text(text: str, may_be_empty: bool = False) -> str:
    check_text(text, "prompts")
    if may_be_empty and not text.strip():
        return ""  # no text: the style alone steers
    if not text.strip():
        raise InvalidParameter("a prompt is empty: describe the music in words, e.g. \"calm lofi piano, 80 bpm\"")
    return text


def check_schedule(prompt, duration: float, may_be_empty: bool = False) -> Schedule:
    """A text -> [(0, text)]; a schedule is checked: starts at 0, times increasing and inside the piece.
    may_be_empty: an empty text is no text (a style reference steers alone)."""
    if isinstance(prompt, str):
        return [(0.0, _text(prompt, may_be_empty))]
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


def check_threads(threads) -> int | None:
    """CPU threads for torch: None (one per available core, fewer while other processes keep cores busy)
    or a whole number >= 1, used as given; more than the cores is allowed (containers can under-report
    them) but said once, since it usually slows generation down."""
    if threads is None:
        return None
    threads = whole(threads, "threads", "a whole number >= 1", lambda v: v >= 1)
    cores = available_cores()
    if threads > cores:
        log.warning("%d threads on %d cores: more threads than cores usually makes generation slower", threads, cores)
    return threads
