"""One generation request, checked whole before any model loads.

The Python API, the CLI and the server all call check_request, so a value is refused the same way
everywhere, before a download or a load can hide the mistake. Each message names the parameter and
its command-line flag: `temperature (--temperature) must be a number >= 0 (0 is greedy), got -1`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio.meter import FLAGS as METER_FLAGS
from .audio.meter import OPTIONS as METER_OPTIONS
from .audio.meter import Meter, check_meter
from .errors import InvalidParameter, TunesmithError
from .family import FAMILIES
from .musicgen.options import MAX_SEED, SamplingParams, Schedule

log = logging.getLogger("tunesmith")

WINDOW_SECONDS = 30.0  # MusicGen was trained on 30 s windows
DEFAULT_DURATION = 10.0  # seconds, when none is given (a repaint keeps its source's length)
MAX_DURATION = 3600.0  # long form: one hour is plenty, and keeps typos like 60000 from running for days
FRAME_SECONDS = 0.02  # one codec frame (50 per second): the shortest clip, and the shortest audio input
MAX_VARIATIONS = 64

MAX_STEPS = 1000
FAMILY_NAMES = {spec.name: spec.display for spec in FAMILIES.values()}
SHORTEST = {spec.name: spec.shortest for spec in FAMILIES.values() if spec.shortest is not None}  # seconds
WORDS_PER_SECOND = 5.0  # more lyrics than this cannot be sung in the song's time (fast rap is about 4)
LANGUAGE = re.compile(r"[a-z]{2,3}|unknown")  # ACE-Step's lyric language codes: en, zh, ja, yue, ...
# Not text: lone surrogates (JSON "\ud800" decodes to one; no tokenizer, file or UTF-8 answer takes it) and
# control characters but tab and line breaks (NUL, ESC, DEL, C1 controls...).
NOT_TEXT = re.compile("[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

FLAGS = {
    "prompts": "PROMPT", "duration": "-d", "seed": "--seed", "num_variations": "-n", "temperature": "--temperature",
    "top_k": "--top-k", "top_p": "--top-p", "cfg": "--cfg", "context": "--context", "loop": "--loop",
    "audio_prompt": "--continue", "melody": "--melody", "threads": "--threads", "steps": "--steps",
    "negative_prompt": "--negative", "sampler": "--sampler", "strength": "--strength",
    "init_audio": "--init-audio", "shifts": "--shifts", "two_stems": "--two-stems", "lyrics": "--lyrics",
    "language": "--language", "style": "--style", "cfg_beta": "--cfg-beta", "style_excerpt": "--style-excerpt",
    "style_quantizers": "--style-quantizers", "style_start": "--style-start", "repaint": "--repaint",
    **METER_FLAGS,
}
# Each family's own options and their defaults (None: the model's own default, read from its checkpoint).
OPTIONS = {spec.name: spec.options for spec in FAMILIES.values()}


def named(param: str) -> str:
    """'top_k (--top-k)': the parameter as the API and the CLI spell it."""
    flag = FLAGS.get(param)
    return f"{param} ({flag})" if flag else param


def real(value, param: str, expected: str, ok=lambda v: True) -> float:
    """`value` as a float: any finite real number (numpy's too) for which ok(value) holds."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and ok(float(value)):
        return float(value)
    raise InvalidParameter(f"{named(param)} must be {expected}, got {value}")


def text_problem(text: str) -> str | None:
    """What makes `text` no text, in a few words that quote no part of it; None when it is fine."""
    bad = NOT_TEXT.search(text)
    if bad is None:
        return None
    what = "a lone surrogate" if "\ud800" <= bad[0] <= "\udfff" else "a control character"
    return f"holds {what} ({ascii(bad[0])[1:-1]}) at character {bad.start() + 1}: send plain UTF-8 text"


def check_text(value, param: str):
    """Refuse a text that is no text (text_problem) with one line naming the parameter; other values pass."""
    problem = text_problem(value) if isinstance(value, str) else None
    if problem:
        raise InvalidParameter(f"{named(param)} {problem}")
    return value


def whole(value, param: str, expected: str, ok=lambda v: True) -> int:
    """`value` as an int: any integer (numpy's too) for which ok(value) holds."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and ok(int(value)):
        return int(value)
    raise InvalidParameter(f"{named(param)} must be {expected}, got {value}")


@dataclass(frozen=True)
class DiffusionParams:
    """Stable Audio's options; None means the model's own default (steps and guidance differ by model)."""

    steps: int | None = None
    cfg: float | None = None  # guidance: uncond + cfg * (cond - uncond); 1 is off
    negative_prompt: str | None = None  # what to steer away from (the unconditioned side of guidance)
    sampler: str | None = None
    strength: float | None = None  # audio-to-audio: 0 keeps the init audio, 1 ignores it


CFG_BETA = 5.0  # MusicGen-Style's double guidance with text and style (audiocraft's demo, mlx-audiogen's default)
STYLE_EXCERPT = (1.5, 4.5)  # seconds: the lengths MusicGen-Style was trained on
STYLE_QUANTIZERS = 6


@dataclass(frozen=True)
class StyleRequest:
    """A style reference and its options; None: the checkpoint's own default."""

    audio: tuple[np.ndarray, int]  # (audio (channels, samples) float32, rate)
    cfg_beta: float = CFG_BETA  # with text: uncond + cfg * (style + cfg_beta * (cond - style) - uncond)
    excerpt: float | None = None  # seconds of the reference the model hears
    quantizers: int | None = None  # style codebooks used: fewer copy the reference less closely
    start: float | None = None  # where the excerpt starts (seconds); None: drawn from each clip's seed


@dataclass(frozen=True)
class SongParams:
    """ACE-Step's options; None means the model's own default (steps and guidance differ by variant)."""

    lyrics: str = ""  # empty: an instrumental
    language: str = "en"  # of the lyrics
    steps: int | None = None
    cfg: float | None = None  # APG guidance for base/sft; turbo has none
    repaint: tuple[float, float | None] | None = None  # (start, end) seconds of the source to regenerate; end
    #   None: to the end. The source is the request's audio_prompt, and its length the song's


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
        return [(s, (first + v) % (MAX_SEED + 1)) for s, first in zip(self.schedules, firsts)
                for v in range(self.num_variations)]


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
                  audio_prompt=None, longest=None, turbo=False, **options) -> Request:
    """Every value checked and normalised (numpy numbers become Python's, files are read); a random
    seed is drawn here when none is given, so that callers can name files after it.

    family: "musicgen", "stable_audio" or "acestep"; `options` are that family's own (OPTIONS lists them), and an
    option of another family is refused. duration None: DEFAULT_DURATION, or the source's length for an
    ACE-Step repaint. longest: the model's longest clip in seconds, when it has one (Stable Audio,
    ACE-Step); MusicGen makes long pieces window by window, up to MAX_DURATION. turbo: the model has its
    guidance distilled in (a turbo ACE-Step), so a cfg is refused before it loads."""
    if family not in OPTIONS:
        raise InvalidParameter(f"family must be one of {', '.join(OPTIONS)}, got {family!r}")
    foreign = sorted(set(options) - set(OPTIONS[family]))
    if foreign:
        raise InvalidParameter(f"{named(foreign[0])} is not an option of {FAMILY_NAMES[family]} models "
                               f"(theirs: {', '.join(OPTIONS[family])})")
    options = {**OPTIONS[family], **options}
    meter_values = {name: options.pop(name) for name in METER_OPTIONS}
    source = None
    if family == "acestep" and (audio_prompt is not None or options["repaint"] is not None):
        source, duration = _repaint_source(audio_prompt, options["repaint"], duration, longest, loop)
        meter, _ = check_meter(**meter_values, repaint=True)
    else:
        # bars (with bpm) set the duration; a loop at a tempo is whole bars long
        meter, duration = check_meter(**meter_values, duration=duration, default=DEFAULT_DURATION, loop=loop,
                                      shortest=SHORTEST.get(family) or 0.0)
        if duration is None:
            duration = DEFAULT_DURATION
    duration = real(duration, "duration", "a positive number of seconds", lambda v: v > 0)
    limit = MAX_DURATION if longest is None else longest
    if duration > limit:
        whose = "tunesmith makes" if longest is None else "this model makes at once"
        raise InvalidParameter(f"{named('duration')} {duration:g} s is longer than the {limit:g} s {whose}")
    shortest = SHORTEST.get(family)
    if shortest is not None and duration < shortest:
        raise InvalidParameter(f"{named('duration')} {duration:g} s is shorter than the {shortest:g} s that "
                               f"{FAMILY_NAMES[family]} models make at least")
    if duration < FRAME_SECONDS:
        raise InvalidParameter(f"{named('duration')} {duration:g} s is shorter than one frame ({FRAME_SECONDS:g} s)")
    no_text = family == "musicgen" and options.get("style") is not None  # a style alone may steer
    if no_text and (prompts is None or prompts == ""):
        prompts = ""
    schedules = [check_schedule(p, duration, no_text) for p in _prompt_list(prompts)]
    num_variations = whole(num_variations, "num_variations", f"a whole number from 1 to {MAX_VARIATIONS}",
                           lambda v: 1 <= v <= MAX_VARIATIONS)
    if seed is None:  # leave room for the variations' seeds before they wrap around
        seed = secrets.randbelow(MAX_SEED + 2 - num_variations)
    seed = whole(seed, "seed", f"a whole number from 0 to {MAX_SEED}", lambda v: 0 <= v <= MAX_SEED)
    if not isinstance(loop, (bool, np.bool_)):
        raise InvalidParameter(f"{named('loop')} must be True or False, got {loop!r}")
    writes_meter = FAMILIES[family].meter_prompt
    if meter is not None and writes_meter is not None:
        schedules = [[(t, writes_meter(text, meter)) for t, text in schedule] for schedule in schedules]
        if meter.time_signature is not None:
            log.info("%s models were not trained on a meter: time_signature only sets the bars' length",
                     FAMILY_NAMES[family])
    common = dict(schedules=schedules, duration=duration, seed=seed, num_variations=num_variations, loop=bool(loop),
                  family=family, meter=meter)
    if family == "stable_audio":
        if any(len(s) > 1 for s in schedules):
            raise InvalidParameter("Stable Audio models take one text per clip, not a prompt schedule")
        init = audio_input(audio_prompt, "audio_prompt", "init_audio")
        return Request(**common, sampling=None, context=0.0, audio_prompt=init,
                       diffusion=_diffusion_params(init is not None, **options))
    if family == "acestep":
        if any(len(s) > 1 for s in schedules):
            raise InvalidParameter("ACE-Step models take one text per song, not a prompt schedule")
        return Request(**common, sampling=None, context=0.0, audio_prompt=source,
                       song=_song_params(duration, turbo, **options))
    if loop and audio_prompt is not None:
        raise InvalidParameter("a loop cannot continue an audio prompt: use one or the other")
    sampling = SamplingParams(
        temperature=real(options["temperature"], "temperature", "a number >= 0 (0 is greedy)", lambda v: v >= 0),
        top_k=whole(options["top_k"], "top_k", "a whole number >= 0 (0 is off)", lambda v: v >= 0),
        top_p=real(options["top_p"], "top_p", "between 0 (off) and 1", lambda v: 0 <= v <= 1),
        cfg=real(options["cfg"], "cfg", "between 1 (no guidance) and 100", lambda v: 1 <= v <= 100))
    context = real(options["context"], "context", f"greater than 0 and less than the {WINDOW_SECONDS:g} s window",
                   lambda v: 0 < v < WINDOW_SECONDS)
    return Request(**common, sampling=sampling, context=context, audio_prompt=audio_input(audio_prompt, "audio_prompt"),
                   melody=audio_input(options["melody"], "melody"), style=_style_request(**{
                       k: options[k] for k in ("style", "cfg_beta", "style_excerpt", "style_quantizers", "style_start")}))


def _style_request(style, cfg_beta, style_excerpt, style_quantizers, style_start) -> StyleRequest | None:
    given = {"cfg_beta": cfg_beta, "style_excerpt": style_excerpt, "style_quantizers": style_quantizers,
             "style_start": style_start}
    if style is None:
        extra = next((k for k, v in given.items() if v is not None), None)
        if extra:
            raise InvalidParameter(f"{named(extra)} applies to a style reference ({FLAGS['style']} FILE, or "
                                   "style=): there is none")
        return None
    if style_excerpt is not None:
        low, high = STYLE_EXCERPT
        style_excerpt = real(style_excerpt, "style_excerpt", f"between {low:g} and {high:g} seconds",
                             lambda v: low <= v <= high)
    if style_quantizers is not None:
        style_quantizers = whole(style_quantizers, "style_quantizers", f"a whole number from 1 to {STYLE_QUANTIZERS}",
                                 lambda v: 1 <= v <= STYLE_QUANTIZERS)
    if style_start is not None:
        style_start = real(style_start, "style_start", "a number of seconds >= 0", lambda v: v >= 0)
    beta = CFG_BETA if cfg_beta is None else real(cfg_beta, "cfg_beta", "between 1 and 100", lambda v: 1 <= v <= 100)
    return StyleRequest(audio_input(style, "style"), beta, style_excerpt, style_quantizers, style_start)


def _diffusion_params(has_init: bool, steps, cfg, negative_prompt, sampler, strength) -> DiffusionParams:
    if steps is not None:
        steps = whole(steps, "steps", f"a whole number from 1 to {MAX_STEPS}", lambda v: 1 <= v <= MAX_STEPS)
    if cfg is not None:
        cfg = real(cfg, "cfg", "between 1 (no guidance) and 100", lambda v: 1 <= v <= 100)
    check_text(negative_prompt, "negative_prompt")
    check_text(sampler, "sampler")
    if negative_prompt is not None:
        if not isinstance(negative_prompt, str):
            raise InvalidParameter(f"{named('negative_prompt')} must be a text, got {negative_prompt!r}")
        negative_prompt = negative_prompt if negative_prompt.strip() else None  # empty: no negative prompt
    if sampler is not None and not isinstance(sampler, str):
        raise InvalidParameter(f"{named('sampler')} must be a sampler's name, got {sampler!r}")
    if strength is not None:
        strength = real(strength, "strength", "between 0 (keep the init audio) and 1 (ignore it)",
                        lambda v: 0 <= v <= 1)
        if not has_init:
            raise InvalidParameter(f"{named('strength')} applies to an init audio ({FLAGS['init_audio']} FILE, "
                                   "or audio_prompt=): there is none")
    return DiffusionParams(steps, cfg, negative_prompt, sampler, strength)


def _repaint_source(audio_prompt, repaint, duration, longest: float | None, loop) -> tuple:
    """An ACE-Step repaint's source, read and checked -> (source, the song's duration: the source's length)."""
    if audio_prompt is None:
        raise InvalidParameter(f"{named('repaint')} needs the song to repaint: give it as audio_prompt "
                               f"({FLAGS['init_audio']} FILE)")
    if repaint is None:
        raise InvalidParameter(f"audio_prompt ({FLAGS['init_audio']}) is a song to repaint for ACE-Step models: add "
                               f"{named('repaint')} START:END, the seconds to make anew (covers are not wired)")
    if loop:
        raise InvalidParameter("a loop cannot repaint a song: use one or the other")
    source = audio_input(audio_prompt, "audio_prompt", "init_audio")
    seconds = source[0].shape[1] / source[1]
    shortest, longest = SHORTEST["acestep"], longest or MAX_DURATION
    if not shortest <= seconds <= longest:
        raise InvalidParameter(f"the song to repaint lasts {seconds:.2f} s: ACE-Step repaints songs of "
                               f"{shortest:g} to {longest:g} s")
    if duration is not None:  # a stored request gives it back; anything else is a mistake, not a wish
        given = real(duration, "duration", "a positive number of seconds", lambda v: v > 0)
        if abs(given - seconds) > 0.01:
            raise InvalidParameter(f"{named('duration')} {given:g} s: a repaint keeps the length of the song it "
                                   f"repaints ({seconds:.2f} s); leave it out")
    return source, seconds


def _song_params(duration: float, turbo: bool, lyrics, language, steps, cfg, repaint) -> SongParams:
    if lyrics is None:
        lyrics = ""
    if not isinstance(lyrics, str):
        raise InvalidParameter(f"{named('lyrics')} must be a text (the words to sing; --lyrics FILE or "
                               f"--lyrics-text TEXT on the command line), got {type(lyrics).__name__}")
    lyrics = check_text(lyrics, "lyrics").strip()
    words = len(re.findall(r"\w+", re.sub(r"\[[^\]]*\]", " ", lyrics)))  # [verse], [chorus] are not sung
    if words > WORDS_PER_SECOND * duration:
        log.warning("%d words of lyrics for %g s: more than about %g words a second cannot be sung, so the model "
                    "will rush or drop lines; make the song longer (-d) or the lyrics shorter", words, duration,
                    WORDS_PER_SECOND)
    if language is None:
        language = "en"
    check_text(language, "language")
    if not isinstance(language, str) or not LANGUAGE.fullmatch(language.strip().lower()):
        raise InvalidParameter(f"{named('language')} must be a language code such as en, zh, ja, es or unknown, "
                               f"got {language!r}")
    if steps is not None:
        steps = whole(steps, "steps", f"a whole number from 1 to {MAX_STEPS}", lambda v: 1 <= v <= MAX_STEPS)
    if cfg is not None:
        cfg = real(cfg, "cfg", "between 1 (no guidance) and 100", lambda v: 1 <= v <= 100)
        check_guidance(cfg, turbo)
    return SongParams(lyrics, language.strip().lower(), steps, cfg, _repaint_span(repaint, duration))


def check_guidance(cfg: float | None, turbo: bool):
    """A turbo ACE-Step has its guidance distilled in: a cfg for it is refused (the pipeline would ignore it)."""
    if turbo and cfg is not None and cfg != 1:
        raise InvalidParameter(f"{named('cfg')} does not apply to turbo ACE-Step models (guidance is distilled "
                               "into them); use acestep-base or acestep-sft for guidance")


def _repaint_span(repaint, seconds: float) -> tuple[float, float | None] | None:
    """(start, end) inside a song of `seconds`: end None (or -1, as the pipeline writes it) is the end."""
    if repaint is None:
        return None
    expected = "(start, end) in seconds, end None for the end of the song"
    if not isinstance(repaint, (list, tuple)) or len(repaint) != 2:
        raise InvalidParameter(f"{named('repaint')} must be {expected}, got {repaint!r}")
    start = real(repaint[0], "repaint", f"{expected}; its start a number >= 0", lambda v: v >= 0)
    end = repaint[1]
    if end is not None and not (isinstance(end, numbers.Real) and end == -1):
        end = real(end, "repaint", f"{expected}; its end a number after its start", lambda v: v > start)
    else:
        end = None
    if start >= seconds:
        raise InvalidParameter(f"{named('repaint')} starts at {start:g} s, not inside the song ({seconds:.2f} s)")
    if end is not None and end > seconds + 0.01:
        raise InvalidParameter(f"{named('repaint')} ends at {end:g} s, after the song's end ({seconds:.2f} s): leave "
                               "the end out to repaint to the end")
    if start == 0 and (end is None or end >= seconds):
        log.warning("repainting the whole song keeps nothing of it: this is a new song of its length")
    return start, end


def read_lyrics(path: str | Path) -> str:
    """The text of a lyrics file (UTF-8), refused with one line when it is missing or not text."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TunesmithError(f"lyrics file {path} does not exist") from None
    except IsADirectoryError:
        raise TunesmithError(f"lyrics file {path} is a folder, not a text file") from None
    except OSError as err:
        raise TunesmithError(f"lyrics file {path} cannot be read ({err.strerror or err})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is None or "\x00" in text:
        raise TunesmithError(f"lyrics file {path} is not text (UTF-8): give the words to sing, one line each")
    if not text.strip():
        raise TunesmithError(f"lyrics file {path} is empty: leave --lyrics out for an instrumental")
    return text


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


PURPOSE = {"audio_prompt": "there is nothing to continue", "melody": "there is no tune to follow",
           "style": "there is no style to take",
           "init_audio": "there is nothing to start from", "audio": "there is nothing to separate"}
# The longest each audio input may last, in seconds: longer files are refused from their header, before
# they are decoded (memory grows with the decoded length, not the file's size).
AUDIO_SECONDS = {
    "audio_prompt": MAX_DURATION,  # a prompt to continue is shorter than the piece
    "melody": MAX_DURATION,  # followed over the whole piece
    "init_audio": 1200.0,  # Stable Audio cuts it to the clip; ACE-Step repaints songs of up to 600 s
    "style": 1200.0,  # a song: a few seconds of it are taken
    "audio": 3600.0,  # stems: a whole track, separated in memory (measured: 240 MB a stereo minute, 14 GB an hour)
}


def audio_input(value, param: str, role: str | None = None) -> tuple[np.ndarray, int] | None:
    """A path, a Clip or (array, sample_rate) -> ((channels, samples) float32, rate), refused with one
    line when it is empty, shorter than a frame, silent or not finite. role: what the audio is for when
    it differs from the parameter's name (Stable Audio's audio_prompt is an init audio, --init-audio)."""
    from .audio.io import read_audio

    if value is None:
        return None
    label = f"{param} ({FLAGS[role]})" if role else named(param)
    purpose = PURPOSE[role or param]
    if isinstance(value, (str, Path)):
        audio, rate = read_audio(value, AUDIO_SECONDS[role or param], f"{label} {value}")
        name = str(value)
    elif hasattr(value, "audio") and hasattr(value, "sample_rate"):
        audio, rate, name = value.audio, value.sample_rate, f"the {param} clip"
    elif isinstance(value, tuple) and len(value) == 2:
        audio, rate, name = value[0], value[1], f"the {param} audio"
        audio = np.asarray(audio)
        if audio.ndim == 2 and audio.shape[1] in (1, 2) and audio.shape[0] > 2:  # (samples, channels)
            audio = audio.T
    else:
        raise InvalidParameter(f"{label} must be a file path, a Clip, or (array, sample_rate)")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2 or audio.shape[0] == 0 or not isinstance(rate, numbers.Integral) or rate <= 0:
        raise InvalidParameter(f"{label} arrays must be (channels, samples) or (samples,), "
                               "with a positive whole sample rate")
    if audio.shape[1] == 0:
        raise TunesmithError(f"{name} is empty: {purpose}")
    if audio.shape[1] < FRAME_SECONDS * rate:
        raise TunesmithError(f"{name} lasts {audio.shape[1] / rate * 1000:.1f} ms, less than one frame "
                             f"({FRAME_SECONDS * 1000:g} ms): {purpose}")
    if not np.isfinite(audio).all():
        raise TunesmithError(f"{name} holds NaN or infinite samples")
    if np.sqrt(np.mean(audio.astype(np.float64) ** 2)) < 1e-4:  # -80 dBFS
        raise TunesmithError(f"{name} is silent: {purpose}")
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
