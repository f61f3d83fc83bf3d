"""A job's request as the server stores it: plain JSON (the checked values, the seed included) that
becomes a tunesmith Request again in the worker, through the same check_request the CLI uses."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..audio.formats import FORMATS, WAV_FORMATS
from ..errors import InvalidParameter
from ..family import FAMILIES
from ..request import Request, check_request, real, shown_seconds, whole
from .registry import Entry

STORED_FORMATS = FORMATS  # what tunesmith writes
DOWNLOAD_FORMATS = STORED_FORMATS + ("aiff",)  # aiff: mlx-audiogen's web UI asks for it


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int = 2000
    max_duration: float = 300.0  # seconds of one clip
    max_variations: int = 8
    media_dirs: tuple[Path, ...] = ()  # the only server folders a client may name files in


def _short(value, n: int = 80) -> str:
    text = str(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def plan_job(entry: Entry, limits: Limits, *, prompt, duration, seed=None, variations=1, loop=False,
             options: dict | None = None, audio_prompt: str | None = None, finishing: dict | None = None,
             fmt: str = "wav", wav_format: str = "pcm16") -> tuple[dict, Request]:
    """The checked job -> (spec to store, its Request). Raises InvalidParameter (one line) for any bad
    value, before the job is queued. audio_prompt and options["melody"] are server paths already allowed."""
    _check_prompt(prompt, limits)
    if duration is not None:  # None: the default, or a repaint's song's length (checked below)
        duration = real(duration, "duration", "a positive number of seconds", lambda v: v > 0)
        _check_duration(duration, limits)
    variations = whole(variations, "variations", f"a whole number from 1 to {limits.max_variations} (this "
                       "server's limit)", lambda v: 1 <= v <= limits.max_variations)
    if fmt not in STORED_FORMATS:
        raise InvalidParameter(f"format must be one of {', '.join(STORED_FORMATS)}, got {_short(fmt)!r}")
    if wav_format not in WAV_FORMATS:
        raise InvalidParameter(f"wav_format must be one of {', '.join(WAV_FORMATS)}, got {_short(wav_format)!r}")
    options = {k: v for k, v in (options or {}).items() if v is not None}
    spec = dict(model=entry.name, family=entry.family, prompt=prompt, duration=duration, seed=seed,
                variations=variations, loop=loop, options=options, audio_prompt=audio_prompt, format=fmt,
                wav_format=wav_format)
    request = request_of(spec, entry)
    _check_duration(request.duration, limits)
    spec["seed"] = request.seed  # drawn by check_request when none was given: a rerun makes the same audio
    spec["duration"] = request.duration
    spec["finishing"] = check_finishing(finishing or {}, request.duration, request.loop)
    return spec, request


def _check_duration(duration: float, limits: Limits):
    if duration > limits.max_duration:
        raise InvalidParameter("{duration} {seconds:g} s is longer than this server's limit of {limit} s",
                               "duration", seconds=duration, limit=shown_seconds(limits.max_duration))


def request_of(spec: dict, entry: Entry) -> Request:
    return check_request(spec["prompt"], family=spec["family"], longest=entry.spec.longest, turbo=entry.spec.turbo,
                         duration=spec["duration"], seed=spec["seed"], num_variations=spec["variations"],
                         loop=spec["loop"], audio_prompt=spec["audio_prompt"], **spec["options"])


def _check_prompt(prompt, limits: Limits):
    if isinstance(prompt, str):
        texts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(e, (list, tuple)) and len(e) == 2 for e in prompt):
        texts = [e[1] for e in prompt]
        if len(prompt) > 64:
            raise InvalidParameter(f"a prompt schedule has at most 64 entries, got {len(prompt)}")
    else:
        raise InvalidParameter("prompt must be a text or a schedule [[start_second, text], ...]")
    length = sum(len(t) for t in texts if isinstance(t, str))
    if length > limits.max_prompt_chars:
        raise InvalidParameter(f"the prompt has {length} characters; this server takes at most "
                               f"{limits.max_prompt_chars}")


def check_finishing(finishing: dict, duration: float, loop: bool) -> dict | None:
    """Clip.finish's arguments, checked; None when nothing is asked (the clip is kept as generated)."""
    fade_in = real(finishing.get("fade_in") or 0.0, "fade_in", "a number of seconds >= 0", lambda v: v >= 0)
    fade_out = real(finishing.get("fade_out") or 0.0, "fade_out", "a number of seconds >= 0", lambda v: v >= 0)
    loudness, ceiling = finishing.get("loudness"), finishing.get("ceiling")
    ceiling = -1.0 if ceiling is None else real(ceiling, "ceiling", "between -70 and 0 dBTP", lambda v: -70 <= v <= 0)
    if loudness is not None:
        loudness = real(loudness, "loudness", "between -70 and 0 LUFS", lambda v: -70 <= v <= 0)
    if fade_in + fade_out > duration:
        raise InvalidParameter(f"fade_in plus fade_out ({fade_in + fade_out:g} s) is longer than the audio "
                               f"({duration:g} s)")
    if loop and (fade_in or fade_out):
        raise InvalidParameter("fades would break a seamless loop: use loop without fade_in/fade_out")
    if not (fade_in or fade_out or loudness is not None):
        return None
    return dict(fade_in=fade_in, fade_out=fade_out, loudness=loudness, ceiling=ceiling)


def batch_key(spec: dict, job_id: str) -> str:
    """Jobs of one model with equal keys are generated in one batch: everything but the prompt, the
    seed and the variations agrees (finishing and format are applied per job afterwards; the LoRA set is
    the same: the worker merges one set per batch). Jobs with
    audio inputs (continuation, and each family's options of audio: melody, style, Stable Audio 3's extension)
    and stems jobs run alone."""
    audio = [name for name, option in FAMILIES[spec["family"]].params.items() if option.kind == "audio"] \
        if spec.get("family") in FAMILIES else ["melody", "style"]
    if spec.get("kind") == "stems" or spec["audio_prompt"] is not None or any(
            spec["options"].get(k) is not None for k in audio):
        return f"alone:{job_id}"
    shared = {k: spec[k] for k in ("family", "duration", "loop", "options")}
    if "lora" in spec:  # an adapter set ([]: none): merged for the whole batch, so never beside another set
        shared["lora"] = spec["lora"]
    return json.dumps(shared, sort_keys=True)


def prompt_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return " | ".join(f"{t:g}s: {text}" for t, text in prompt)


def media_file(value, media_dirs: tuple[Path, ...], field: str) -> str:
    """A file a client names on the server: allowed only inside a --media-dir, after symlinks and '..'
    are resolved (so neither can lead out)."""
    if not isinstance(value, str) or not value:
        raise InvalidParameter(f"{field} must be a file path")
    if not media_dirs:
        raise InvalidParameter(f"{field}: this server reads no files of its own (start it with --media-dir DIR); "
                               "upload the audio to /api/uploads instead")
    try:
        given = Path(value)
        candidates = [given] if given.is_absolute() else [d / given for d in media_dirs]
        for candidate in candidates:
            resolved = candidate.resolve()
            if any(resolved.is_relative_to(d) for d in media_dirs):
                if not resolved.is_file():
                    raise InvalidParameter(f"{field}: {_short(value)} is not a file in the media folder")
                return str(resolved)
    except (OSError, ValueError, RuntimeError) as err:  # a NUL byte, a symlink loop, ...
        if isinstance(err, InvalidParameter):
            raise
        raise InvalidParameter(f"{field}: {_short(value)!r} is not a usable path") from None
    raise InvalidParameter(f"{field}: {_short(value)!r} is outside the media folders this server may read")


def finite_or_none(value) -> float | None:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None
