"""ACE-Step's request values, without torch: its options (defaults, how each shell offers them), the song
lengths it makes, and their checks, which tunesmith.request.check_request runs for ACE-Step models."""

from __future__ import annotations

import logging
import numbers
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import TunesmithError
from ..params import (MAX_DURATION, MAX_STEPS, Asked, Option, audio_input, check_text, one_text, real, refuse,
                      shown_seconds, whole)

log = logging.getLogger("tunesmith")

SHORTEST, LONGEST = 10.0, 600.0  # seconds: the range ACE-Step 1.5 was trained on (10 s to 10 min)
WORDS_PER_SECOND = 5.0  # more lyrics than this cannot be sung in the song's time (fast rap is about 4)
LANGUAGE = re.compile(r"[a-z]{2,3}|unknown")  # ACE-Step's lyric language codes: en, zh, ja, yue, ...


@dataclass(frozen=True)
class SongParams:
    """ACE-Step's options; None means the model's own default (steps and guidance differ by variant)."""

    lyrics: str = ""  # empty: an instrumental
    language: str = "en"  # of the lyrics
    steps: int | None = None
    cfg: float | None = None  # APG guidance for base/sft; turbo has none
    repaint: tuple[float, float | None] | None = None  # (start, end) seconds of the source to regenerate; end
    #   None: to the end. The source is the request's audio_prompt, and its length the song's


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


# Its own generate options (None: the checkpoint's own default, read when it loads) and how each shell
# offers them.
PARAMS = {
    "lyrics": Option(None, "--lyrics", "textfile", metavar="FILE", max_length=20_000, read=read_lyrics, score=True,
                     about="ACE-Step: the words to sing ([verse], [chorus] tags allowed)",
                     help="a text file of the words to sing ([verse], [chorus], ... mark sections); without "
                          "lyrics, an instrumental"),
    "language": Option(None, "--language", "text", metavar="CODE", max_length=20, score=True,
                       about="ACE-Step: the lyrics' language (en, zh, ...)",
                       help="the lyrics' language code, e.g. en (default), zh, ja, es"),
    "steps": Option(None, "--steps", "whole", score=True, compat="steps",
                    help="sampler steps (default: acestep 8, acestep-base/sft 50)"),
    "cfg": Option(None, "--cfg", score=True, compat="cfg_scale",
                  help="guidance, 1 disables (default: acestep-base/sft 7; acestep turbo has none)"),
    "repaint": Option(None, "--repaint", "span", metavar="START:END",
                      about="ACE-Step: [start, end] seconds of the continuation's song to make anew (end null: to "
                            "the end); the rest is kept",
                      help="with --init-audio: make these seconds of the song anew and keep the rest (30:45; 30: "
                           "to the end); the output lasts as long as the song"),
}
OPTIONS = {name: option.default for name, option in PARAMS.items()}


def song_length(audio_prompt, duration, longest: float | None, loop, options: dict) -> tuple:
    """A repaint's song, read and checked -> (source, the song's duration: the source's length); any other
    request -> (audio_prompt, duration) as given."""
    repaint = options["repaint"]
    if audio_prompt is None and repaint is None:
        return audio_prompt, duration
    if audio_prompt is None:
        raise refuse("{repaint} needs the song to repaint: give it as {audio_prompt}", "repaint")
    if repaint is None:
        raise refuse("{audio_prompt} is a song to repaint for ACE-Step models: add {repaint} START:END, "
                               "the seconds to make anew (covers are not wired)", "audio_prompt")
    if loop:
        raise refuse("a loop cannot repaint a song: use one or the other")
    source = audio_input(audio_prompt, "audio_prompt", "init_audio")
    seconds = source[0].shape[1] / source[1]
    longest = longest or MAX_DURATION
    if not SHORTEST <= seconds <= longest:
        raise refuse(f"the song to repaint lasts {seconds:.2f} s: ACE-Step repaints songs of "
                               f"{shown_seconds(SHORTEST, 'least')} to {shown_seconds(longest)} s")
    if duration is not None:  # a stored request gives it back; anything else is a mistake, not a wish
        given = real(duration, "duration", "a positive number of seconds", lambda v: v > 0)
        if abs(given - seconds) > 0.01:
            raise refuse("{duration} {given:g} s: a repaint keeps the length of the song it repaints "
                                   "({seconds:.2f} s); leave it out", "duration", given=given, seconds=seconds)
    return source, seconds


def check(asked: Asked, *, lyrics, language, steps, cfg, repaint) -> dict:
    """ACE-Step's options checked -> the Request's fields of its own (its audio input: a song that
    song_length has read)."""
    one_text(asked.schedules, "ACE-Step models take one text per song")
    duration = asked.duration
    if lyrics is None:
        lyrics = ""
    if not isinstance(lyrics, str):
        raise refuse("{lyrics} must be a text (the words to sing), got {kind}", "lyrics",
                               kind=type(lyrics).__name__)
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
        raise refuse("{language} must be a language code such as en, zh, ja, es or unknown, got {value!r}",
                               "language", value=language)
    if steps is not None:
        steps = whole(steps, "steps", f"a whole number from 1 to {MAX_STEPS}", lambda v: 1 <= v <= MAX_STEPS)
    if cfg is not None:
        cfg = real(cfg, "cfg", "between 1 (no guidance) and 100", lambda v: 1 <= v <= 100)
        check_guidance(cfg, asked.turbo)
    song = SongParams(lyrics, language.strip().lower(), steps, cfg, _repaint_span(repaint, duration))
    return dict(sampling=None, context=0.0, audio_prompt=asked.audio_prompt, song=song)


def check_guidance(cfg: float | None, turbo: bool):
    """A turbo ACE-Step has its guidance distilled in: a cfg for it is refused (the pipeline would ignore it)."""
    if turbo and cfg is not None and cfg != 1:
        raise refuse("{cfg} does not apply to turbo ACE-Step models (guidance is distilled into them); "
                               "use acestep-base or acestep-sft for guidance", "cfg")


def _repaint_span(repaint, seconds: float) -> tuple[float, float | None] | None:
    """(start, end) inside a song of `seconds`: end None (or -1, as the pipeline writes it) is the end."""
    if repaint is None:
        return None
    expected = "a start and an end in seconds (no end: to the end of the song)"
    if not isinstance(repaint, (list, tuple)) or len(repaint) != 2:
        raise refuse("{repaint} must be {expected}, got {value!r}", "repaint", expected=expected,
                               value=repaint)
    start = real(repaint[0], "repaint", f"{expected}; its start a number >= 0", lambda v: v >= 0)
    end = repaint[1]
    if end is not None and not (isinstance(end, numbers.Real) and end == -1):
        end = real(end, "repaint", f"{expected}; its end a number", lambda v: v >= 0)
        if end <= start:
            raise refuse("{repaint} ends at {end:g} s, not after its start ({start:g} s)", "repaint", end=end,
                         start=start)
    else:
        end = None
    if start >= seconds:
        raise refuse("{repaint} starts at {start:g} s, not inside the song ({seconds:.2f} s)", "repaint",
                               start=start, seconds=seconds)
    if end is not None and end > seconds + 0.01:
        raise refuse("{repaint} ends at {end:g} s, after the song's end ({seconds:.2f} s): leave the end "
                               "out to repaint to the end", "repaint", end=end, seconds=seconds)
    if start == 0 and (end is None or end >= seconds):
        log.warning("repainting the whole song keeps nothing of it: this is a new song of its length")
    return start, end
