"""One request parameter: how its value is checked (real, whole, check_text, audio_input) and how each
shell shows it (Option: its default, the CLI's flag and help, the server's field). Torch- and numpy-free
at import, below tunesmith/request.py and every family's options module, which both build on it.

A refusal is an InvalidParameter whose message names parameters as fields ({top_k}): the API and the
CLI write them `top_k (--top-k)`, the server as its JSON bodies name them."""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import InvalidParameter, TooLong, TunesmithError

if TYPE_CHECKING:
    import numpy as np

FRAME_SECONDS = 0.02  # one codec frame (50 per second): the shortest clip, and the shortest audio input
MAX_DURATION = 3600.0  # long form: one hour is plenty, and keeps typos like 60000 from running for days
MAX_STEPS = 1000  # sampler steps, for the families that take them

# Not text: lone surrogates (JSON "\ud800" decodes to one; no tokenizer, file or UTF-8 answer takes it) and
# control characters but tab and line breaks (NUL, ESC, DEL, C1 controls...).
NOT_TEXT = re.compile("[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

# What a value of each kind is, to each shell: the CLI's converter and metavar, the server's JSON type.
KINDS = ("number", "seconds", "whole", "text", "audio", "span", "spans", "textfile", "meter")


@dataclass(frozen=True)
class Option:
    """One option of a family (or of every request): its default and how each shell offers it. Adding an
    option to a family is adding one of these to its options module (and a line to README)."""

    default: Any = None  # None: the checkpoint's own default, or off
    flag: str | None = None  # the CLI's flag, "--top-k"; None: none
    kind: str = "number"  # one of KINDS: a number, seconds, a whole number, a text, an audio input (a file, a
    #   Clip or an array; the server takes an upload's id), START:END seconds (spans: one or several, the CLI's
    #   flag repeated), a text the CLI reads from a file (FLAG FILE, or FLAG-text TEXT), or a meter (beats
    #   a bar, 3, or as written, "3/4": a whole number or a text to the server)
    help: str = ""  # the CLI's help
    about: str = ""  # the server field's description (default: the families that take it)
    metavar: str | None = None  # the CLI's
    score: bool = False  # `tunesmith score` takes it too (sampling, words, not audio inputs)
    steers: bool = False  # a value of it steers the music alone: the prompt may then be left out
    needs: str | None = None  # what the model must offer for it: "style" or "melody" (ModelSpec's flags)
    modifies: str | None = None  # the input it tunes, which it needs ("style", "audio_prompt")
    max_length: int | None = None  # of a text, in the server's bodies
    field: str | None = None  # its name in the server's POST /api/jobs body, where it differs from the API's
    compat: str | None = None  # its name in mlx-audiogen's POST /api/generate, where that route takes it
    read: Callable[[str], str] | None = None  # textfile: reads FILE (a missing or binary file in one line)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Option kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


# What every request takes, whatever the family: the API's keyword -> how the CLI and the server show it.
COMMON = {
    "prompts": Option(flag="PROMPT", kind="text", field="prompt", compat="prompt"),
    "duration": Option(flag="-d", kind="seconds", compat="seconds"),
    "seed": Option(flag="--seed", kind="whole", compat="seed"),
    "num_variations": Option(default=1, flag="-n", kind="whole", field="variations"),
    "loop": Option(default=False, flag="--loop"),
    "audio_prompt": Option(kind="audio", field="continuation"),  # its flag is the family's (FamilySpec.audio_flag)
    "threads": Option(flag="--threads", kind="whole"),
}
# Tempo, key and meter, which every family takes too (checked by tunesmith.audio.meter.check_meter): ACE-Step
# as its caption's metadata, the text families written into the prompt (FamilySpec.meter_prompt).
METER = {
    "bpm": Option(flag="--bpm", metavar="BPM", help="tempo, 30 to 300 beats a minute (ACE-Step: its metadata; "
                  "MusicGen and Stable Audio: written into the prompt); with --loop, a loop of whole bars",
                  about="tempo, 30 to 300 beats a minute"),
    "key": Option(flag="--key", kind="text", metavar="KEY", max_length=20,
                  help='key: a tonic and a mode, "C major", "F# minor", "Bb major"',
                  about='a tonic and a mode: "C major", "F# minor"'),
    "time_signature": Option(flag="--time-signature", kind="meter", metavar="METER",
                             help="the meter: 2/4, 3/4, 4/4 or 6/8, or its beats a bar, 2, 3, 4 or 6 (default 4/4)",
                             about='the meter: "2/4", "3/4", "4/4", "6/8", or its beats a bar: 2, 3, 4 or 6'),
    "bars": Option(flag="--bars", kind="whole", metavar="N",
                   help="with --bpm: the length in whole bars (instead of -d): 8 bars at 124 bpm are 15.484 s",
                   about="with bpm: the length in whole bars (leave duration out)"),
}
COMMON.update(METER)


# Stems' options, as tunesmith.separate and `tunesmith stems` take them.
STEMS = {
    "audio": Option(kind="audio"),
    "two_stems": Option(flag="--two-stems", kind="text"),
    "shifts": Option(1, "--shifts", "whole"),
}


def shown_names(*tables: dict[str, Option]) -> dict[str, str]:
    """The API's (and the CLI's) words for the parameters of these tables: 'top_k (--top-k)'; a parameter
    of several tables has one flag (the first table's)."""
    names: dict[str, str] = {}
    for table in tables:
        for name, option in table.items():
            if option.flag and name not in names:
                names[name] = f"{name} ({option.flag})"
    return names


# The API's words for every parameter, 'top_k (--top-k)': COMMON's and STEMS' here, each family's added by
# the family table (tunesmith/family.py) as it loads. check_request gives its refusals the words of the
# request's family (its audio input's flag: --continue or --init-audio).
API_NAMES: dict[str, str] = {}


API_NAMES.update(shown_names(COMMON, STEMS))


def refuse(message: str, param: str | None = None, **values) -> InvalidParameter:
    """An InvalidParameter whose template (see InvalidParameter) the API shows with API_NAMES."""
    err = InvalidParameter(message, param, **values)
    err.names = API_NAMES
    return err


def shown_seconds(seconds: float, bound: str = "most") -> str:
    """A limit in seconds as people write it: two decimals at most (2.97, not 2.97215), rounded toward the
    allowed side (down for the most, up for the least), so that the value shown is itself allowed."""
    cents = seconds * 100
    cents = math.floor(cents + 1e-6) if bound == "most" else math.ceil(cents - 1e-6)
    return f"{cents / 100:.2f}".rstrip("0").rstrip(".")


def real(value, param: str, expected: str, ok=lambda v: True) -> float:
    """`value` as a float: any finite real number (numpy's too) for which ok(value) holds."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and ok(float(value)):
        return float(value)
    raise refuse(f"{{{param}}} must be {{expected}}, got {{value}}", param, expected=expected, value=value)


def whole(value, param: str, expected: str, ok=lambda v: True) -> int:
    """`value` as an int: any integer (numpy's too) for which ok(value) holds."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and ok(int(value)):
        return int(value)
    raise refuse(f"{{{param}}} must be {{expected}}, got {{value}}", param, expected=expected, value=value)


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
        raise refuse(f"{{{param}}} {{problem}}", param, problem=problem)
    return value


@dataclass(frozen=True)
class Asked:
    """What check_request hands a family's check besides the family's own options: the common values,
    checked (the audio input as given: a path, a Clip or (array, rate), or as the family's length hook read it)."""

    schedules: list  # one per prompt: [(start_second, text), ...]
    duration: float
    loop: bool
    audio_prompt: Any
    turbo: bool  # the model has its guidance distilled in (a turbo ACE-Step)


def one_text(schedules: list, what: str):
    """Refuse prompt schedules for a family that takes one text per piece (`what`: 'Stable Audio models take
    one text per clip')."""
    if any(len(s) > 1 for s in schedules):
        raise refuse(f"{what}, not a prompt schedule")


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
    it differs from the parameter's name (Stable Audio's audio_prompt is an init audio)."""
    import numpy as np  # here: the family table, and so `tunesmith --help`, loads no numpy

    from .audio.io import read_audio

    if value is None:
        return None
    purpose = PURPOSE[role or param]
    template = f"{{{param}}}"

    def refused(message: str):
        return refuse(f"{template} {message}", param)

    if isinstance(value, (str, Path)):
        try:
            audio, rate = read_audio(value, AUDIO_SECONDS[role or param], f"{param} {value}")
        except TooLong as err:  # 'PARAM FILE lasts ...': the parameter as each shell names it
            text = str(err)
            rest = text[len(param):] if text.startswith(param) else f" {text}"
            too_long = TooLong(template + rest.replace("{", "{{").replace("}", "}}"), param)
            too_long.names = API_NAMES
            raise too_long from None
        name = str(value)
    elif hasattr(value, "audio") and hasattr(value, "sample_rate"):
        audio, rate, name = value.audio, value.sample_rate, f"the {param} clip"
    elif isinstance(value, tuple) and len(value) == 2:
        audio, rate, name = value[0], value[1], f"the {param} audio"
        audio = np.asarray(audio)
        if audio.ndim == 2 and audio.shape[1] in (1, 2) and audio.shape[0] > 2:  # (samples, channels)
            audio = audio.T
    else:
        raise refused("must be a file path, a Clip, or (array, sample_rate)")
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2 or audio.shape[0] == 0 or not isinstance(rate, numbers.Integral) or rate <= 0:
        raise refused("arrays must be (channels, samples) or (samples,), with a positive whole sample rate")
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
