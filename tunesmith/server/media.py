"""A stored clip as an HTTP answer: in its own format, or converted to another (a temporary file,
deleted once sent), named as the CLI names its files."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from ..errors import NoSpace, TunesmithError
from .store import new_id

log = logging.getLogger("tunesmith.server")

MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "ogg": "audio/ogg", "m4a": "audio/mp4",
               "aiff": "audio/aiff"}


def audio_file(stored: Path, fmt: str, name: str, tmp: Path) -> FileResponse:
    """The stored clip as `name`, converted to fmt when it is in another format."""
    if fmt == stored.suffix[1:]:
        return FileResponse(stored, media_type=MEDIA_TYPES[fmt], filename=name)
    converted = convert(stored, fmt, tmp)
    return FileResponse(converted, media_type=MEDIA_TYPES[fmt], filename=name,
                        background=BackgroundTask(converted.unlink, missing_ok=True))


def convert(stored: Path, fmt: str, folder: Path) -> Path:
    """The stored clip in another format, as a temporary file (deleted once sent). A failure says what
    failed, not where: the log has the paths."""
    from ..audio.io import read_audio, write_audio, write_sndfile, written_whole

    target = folder / f"{new_id()}.{fmt}"
    try:
        folder.mkdir(exist_ok=True)
        audio, rate = read_audio(stored)
        if fmt == "aiff":  # libsndfile writes AIFF; tunesmith's writer does not offer it
            with written_whole(target) as partial:
                write_sndfile(partial, audio.clip(-1, 1), rate, "AIFF", "PCM_16", "cannot write")
        else:
            write_audio(target, audio, rate)
    except (TunesmithError, OSError) as err:
        log.error("converting %s to %s failed: %s", stored, fmt, err)
        text = str(err) if isinstance(err, TunesmithError) else err.strerror or str(err)
        if text.startswith("cannot write"):  # 'cannot write PATH: why': the why
            text = text.split(": ", 1)[-1]
        target.unlink(missing_ok=True)
        if isinstance(err, NoSpace) or getattr(err, "errno", None) == errno.ENOSPC or "No space left" in text:
            raise NoSpace(f"the server's disk is full: cannot convert the audio to {fmt}") from None
        raise TunesmithError(f"cannot convert the job's audio to {fmt}: {text}") from None
    return target
