"""Reading and writing audio files: WAV and FLAC through libsndfile (soundfile), MP3, Ogg Vorbis
and M4A (AAC) through ffmpeg."""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import InvalidParameter, NoSpace, TooLong, TunesmithError
from .formats import FORMATS as NAMES
from .formats import WAV_SUBTYPES

WAV_FORMATS = WAV_SUBTYPES
SNDFILE = {".wav": "WAV", ".flac": "FLAC"}
# Compressed formats: ffmpeg encoder arguments.
FFMPEG_CODECS = {
    ".mp3": ["-c:a", "libmp3lame", "-b:a", "192k"],
    ".ogg": ["-c:a", "libvorbis", "-q:a", "6"],
    ".m4a": ["-c:a", "aac", "-b:a", "192k"],
}
FORMATS = tuple(f".{name}" for name in NAMES)  # each written through SNDFILE or FFMPEG_CODECS
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or the user's quota on it
NO_SPACE_WORDS = ("no space left on device", "disk quota exceeded")  # the same, as ffmpeg reports them


def is_no_space(err: OSError) -> bool:
    return err.errno in NO_SPACE


BLOCK_FRAMES = 1 << 16  # frames decoded at a time: beyond the audio itself, reading holds only this much
# A limit in seconds counts samples as 48 kHz stereo would, so that a high rate or many channels cannot
# make more memory of the same seconds.
BUDGET_RATE, BUDGET_CHANNELS = 48_000, 2
_UNKNOWN_FRAMES = 2**63 - 1  # libsndfile's count for a FLAC whose header does not say


def check_output_path(path: Path, folder_to_make: bool = False) -> Path:
    """Refuse, before any work, a path we could not write: a folder, an unknown format, a missing or
    read-only folder, or a compressed format without an ffmpeg to encode it. folder_to_make: the path's
    folder is made just before writing (its parent must exist and take it)."""
    path = Path(path)
    if path.is_dir():
        raise TunesmithError(f"cannot write {path}: it is a folder; give a file name such as {path / 'music.wav'}")
    if path.suffix.lower() not in FORMATS:
        raise InvalidParameter(f"unsupported output format '{path.suffix or path.name}': use {', '.join(FORMATS)}")
    folder = path.parent
    if folder_to_make and not folder.exists():
        folder = folder.parent
        if not folder.is_dir():
            raise TunesmithError(f"cannot write {path}: neither {path.parent} nor its folder {folder} exists")
    elif not folder.is_dir():
        raise TunesmithError(f"cannot write {path}: folder {folder} does not exist")
    why = unwritable(folder)
    if why is None and path.exists() and not os.access(path, os.W_OK):
        why = "permission denied"
    if why is not None:
        raise TunesmithError(f"cannot write {path}: {why}")
    if path.suffix.lower() in FFMPEG_CODECS:
        from .ffmpeg import ffmpeg_exe

        ffmpeg_exe()  # found now, not after the audio is made
    return path


def unwritable(folder: Path) -> str | None:
    """Why no file can be made in `folder`, or None. Tried with an empty file, not os.access, which says yes
    to root for /proc or a read-only mount. A full disk is left to the write itself, which says so."""
    import tempfile

    if not os.access(folder, os.W_OK):
        return "permission denied"
    try:
        fd, name = tempfile.mkstemp(prefix=".tunesmith-", suffix=".probe", dir=folder)
    except OSError as err:
        if is_no_space(err):
            return None
        if err.errno in (errno.EACCES, errno.EPERM):
            return "permission denied"
        return f"{folder} takes no new files ({(err.strerror or str(err)).lower()})"
    os.close(fd)
    os.unlink(name)
    return None


@contextlib.contextmanager
def written_whole(path: Path):
    """Yield a temporary name beside `path`; only a complete file replaces `path`, so a failure never
    leaves half a file or touches one already there. Every file tunesmith writes goes through here."""
    partial = path.with_name(f".{path.name}.partial{path.suffix}")
    try:
        yield partial
        os.replace(partial, path)
    except OSError as err:
        if not is_no_space(err):
            raise
        raise NoSpace(f"cannot write {path}: no space left on the device") from None
    finally:
        partial.unlink(missing_ok=True)


def write_audio(path: Path, audio: np.ndarray, sample_rate: int, wav_format: str = "pcm16") -> Path:
    """audio (channels, samples) float -> file; the format follows the extension. `wav_format`
    (pcm16, pcm24, float) sets WAV's sample format; FLAC takes pcm16 or pcm24 (float is written as
    pcm24); compressed formats use their codec's own. A failed write leaves any old file as it was."""
    path = check_output_path(Path(path))
    if wav_format not in WAV_FORMATS:
        raise InvalidParameter(f"wav format must be one of {', '.join(WAV_FORMATS)}, got {wav_format!r}")
    suffix = path.suffix.lower()
    data = np.nan_to_num(audio, nan=0.0).astype(np.float32)
    if suffix in FFMPEG_CODECS:
        return _encode_with_ffmpeg(path, data, sample_rate, FFMPEG_CODECS[suffix])
    subtype = WAV_FORMATS[wav_format]
    if suffix == ".flac" and subtype == "FLOAT":
        subtype = "PCM_24"  # FLAC has no float samples
    if subtype != "FLOAT":
        data = np.clip(data, -1.0, 1.0)  # integer formats would wrap around
    with written_whole(path) as partial:
        write_sndfile(partial, data, sample_rate, SNDFILE[suffix], subtype, f"cannot write {path}")
    return path


class _KeptErrorFile:
    """An unbuffered file whose write errors are kept for us: raised inside libsndfile's callbacks they
    would come out as 'System error.' (or an AssertionError) instead of 'No space left on device'."""

    def __init__(self, raw):
        self.raw, self.error = raw, None

    def write(self, data) -> int:
        view, done = memoryview(data), 0
        try:
            while done < len(view):
                done += self.raw.write(view[done:])
        except OSError as err:
            self.error = err
        return done

    def __getattr__(self, name):  # seek, tell, read: the file's own
        return getattr(self.raw, name)


def write_sndfile(path: Path, data: np.ndarray, sample_rate: int, fmt: str, subtype: str, what: str):
    """(channels, samples) -> a WAV or FLAC file through libsndfile; a failure is one TunesmithError line,
    `what` then the reason (a full disk: NoSpace, `no space left on the device`), and may leave part of
    `path` behind."""
    import soundfile as sf

    try:
        with open(path, "wb", buffering=0) as raw:
            target = _KeptErrorFile(raw)
            try:
                sf.write(target, data.T, sample_rate, format=fmt, subtype=subtype)
            except Exception as err:  # libsndfile's report of a failed write: ours says why
                if target.error is None:
                    raise TunesmithError(f"{what}: {err}") from None
            if target.error is not None:
                raise target.error
    except OSError as err:
        if is_no_space(err):
            raise NoSpace(f"{what}: no space left on the device") from None
        raise TunesmithError(f"{what}: {err.strerror or err}") from None


def _encode_with_ffmpeg(path: Path, audio: np.ndarray, sample_rate: int, codec: list[str]) -> Path:
    """ffmpeg encodes a float WAV source written beside the output under a hidden partial name (so a
    crash leaves it where written_whole's partials are swept, never in the system's temp folder)."""
    from .ffmpeg import run_ffmpeg, url

    source = path.with_name(f".{path.name}.partial.source.wav")
    try:
        with written_whole(path) as partial:
            write_sndfile(source, np.clip(audio, -1.0, 1.0), sample_rate, "WAV", "FLOAT", f"cannot write {path}")
            try:
                run_ffmpeg(["-y", "-i", url(source), "-vn", *codec, url(partial)], f"cannot write {path}")
            except TunesmithError as err:  # ffmpeg says why in words only
                if any(words in str(err).lower() for words in NO_SPACE_WORDS):
                    raise NoSpace(f"cannot write {path}: no space left on the device") from None
                raise
    finally:
        source.unlink(missing_ok=True)
    return path


@dataclass
class AudioInfo:
    """What probe_audio learns by decoding a file block by block."""

    seconds: float
    sample_rate: int
    channels: int
    finite: bool  # no NaN or infinite sample


def read_audio(path: str | Path, max_seconds: float | None = None, what: str | None = None) -> tuple[np.ndarray, int]:
    """Any audio file -> ((channels, samples) float32, sample rate). libsndfile first, ffmpeg for the rest.
    max_seconds: longer audio raises TooLong (`what`, default the path, then its length and the limit),
    from the header before anything is decoded, and while decoding, so that memory never grows past the
    array of the allowed length (a header can lie)."""
    label = what or str(path)
    return _decode(Path(path), max_seconds, label, lambda stream: (_gather(stream, label, max_seconds), stream.rate))


def probe_audio(path: str | Path, max_seconds: float | None = None, what: str | None = None) -> AudioInfo:
    """A file's length, rate, channels and whether its samples are finite, decoded block by block: the
    memory is one block whatever the file holds. max_seconds and what as read_audio's."""
    label = what or str(path)

    def scan(stream: "_Stream") -> AudioInfo:
        frames, finite = 0, True
        for block in _bounded(stream, label, max_seconds):
            frames += len(block)
            finite = finite and bool(np.isfinite(block).all())
        return AudioInfo(frames / stream.rate, stream.rate, stream.channels, finite)

    return _decode(Path(path), max_seconds, label, scan)


@dataclass
class _Stream:
    rate: int
    channels: int
    expected: int | None  # frames the header says (or ffmpeg's probe, a little more), to size the array
    blocks: Iterator[np.ndarray]  # (n, channels) float32; each is valid until the next is taken


class _Unreadable(Exception):
    """libsndfile could not read the file (or stopped reading it): ffmpeg tries."""


def _decode(path: Path, max_seconds: float | None, label: str, consume):
    """consume(_Stream) over libsndfile's decoding of `path`, or over ffmpeg's when libsndfile cannot."""
    if not path.is_file():
        raise TunesmithError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        return _with_sndfile(path, max_seconds, label, consume)
    except _Unreadable:
        pass
    from .ffmpeg import PipeDecoder, probe_seconds

    seconds = probe_seconds(path) if max_seconds is not None else None  # the header's length, if any
    if seconds is not None and seconds > max_seconds:
        raise TooLong(_too_long(label, f"{seconds:.1f} s", max_seconds))
    with PipeDecoder(path, max_seconds) as decoder:
        if not decoder.rate:
            raise TunesmithError(f"{path} is not an audio file that can be read")
        expected = int(seconds * decoder.rate * 1.01) + BLOCK_FRAMES if seconds is not None else None
        result = consume(_Stream(decoder.rate, decoder.channels, expected, decoder.blocks(BLOCK_FRAMES)))
        if not decoder.finished_well():
            raise TunesmithError(f"{path} is not an audio file that can be read")
    return result


def _with_sndfile(path: Path, max_seconds: float | None, label: str, consume):
    import soundfile as sf

    try:
        handle = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        raise _Unreadable() from None
    with handle:
        if handle.frames >= _UNKNOWN_FRAMES or handle.samplerate <= 0 or handle.channels <= 0:
            raise _Unreadable()
        _check_header(label, handle.frames, handle.samplerate, handle.channels, max_seconds)
        return consume(_Stream(handle.samplerate, handle.channels, handle.frames, _sndfile_blocks(handle)))


def _sndfile_blocks(handle) -> Iterator[np.ndarray]:
    import soundfile as sf

    block = np.empty((BLOCK_FRAMES, handle.channels), dtype=np.float32)
    while True:
        try:
            got = handle.read(out=block)  # at most the header's frames: soundfile stops there
        except (sf.LibsndfileError, RuntimeError) as err:  # a damaged file: ffmpeg may read past the damage
            raise _Unreadable() from err
        if not len(got):
            return
        yield got


def _limit_frames(rate: int, channels: int, max_seconds: float) -> int:
    """Frames allowed in `max_seconds` at this rate, counted as 48 kHz stereo at most."""
    budget = max_seconds * BUDGET_RATE * BUDGET_CHANNELS / channels
    return int(min(max_seconds * rate, budget))


def _too_long(label: str, length: str, max_seconds: float) -> str:
    return f"{label} lasts {length}: more than the {max_seconds:g} s allowed"


def _length(seconds: float, rate: int, channels: int, more_than: bool = False) -> str:
    """'12.0 s', and its rate and channels when those, not the seconds, pass the budget."""
    text = f"{'more than ' if more_than else ''}{seconds:.1f} s"
    if rate * channels > BUDGET_RATE * BUDGET_CHANNELS:
        text += f" at {rate} Hz with {channels} channels (counted as 48 kHz stereo)"
    return text


def _check_header(label: str, frames: int, rate: int, channels: int, max_seconds: float | None):
    """Refuse, before decoding, audio whose header says it is past the limit."""
    if max_seconds is not None and frames > _limit_frames(rate, channels, max_seconds):
        raise TooLong(_too_long(label, _length(frames / rate, rate, channels), max_seconds))


def _bounded(stream: _Stream, label: str, max_seconds: float | None) -> Iterator[np.ndarray]:
    """The stream's blocks, stopped with TooLong as soon as they pass the limit."""
    if max_seconds is None:
        yield from stream.blocks
        return
    limit, seen = _limit_frames(stream.rate, stream.channels, max_seconds), 0
    for block in stream.blocks:
        seen += len(block)
        if seen > limit:
            raise TooLong(_too_long(label, _length(limit / stream.rate, stream.rate, stream.channels, True),
                                    max_seconds))
        yield block


def _gather(stream: _Stream, label: str, max_seconds: float | None) -> np.ndarray:
    """The stream's blocks in one (channels, samples) array, sized from the header when it has one and
    grown otherwise (never past the limit: _bounded stops first). Only when the length was a guess is the
    array cut to it, by a copy of at most the allowed length."""
    size = stream.expected if stream.expected is not None else 16 * BLOCK_FRAMES
    if max_seconds is not None:
        size = min(size, _limit_frames(stream.rate, stream.channels, max_seconds))
    out, filled = np.empty((stream.channels, size), dtype=np.float32), 0
    for block in _bounded(stream, label, max_seconds):
        if filled + len(block) > out.shape[1]:
            bigger = max(2 * out.shape[1], filled + len(block))
            if max_seconds is not None:
                bigger = min(bigger, _limit_frames(stream.rate, stream.channels, max_seconds))
            grown = np.empty((stream.channels, bigger), dtype=np.float32)
            grown[:, :filled] = out[:, :filled]
            out = grown
        out[:, filled : filled + len(block)] = block.T
        filled += len(block)
    return out if filled == out.shape[1] else out[:, :filled].copy()


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """(channels, samples) -> (channels, samples * to / from), soxr's high quality."""
    import soxr

    if from_rate == to_rate:
        return audio
    out = soxr.resample(np.ascontiguousarray(audio.T), from_rate, to_rate, quality="HQ")
    return (out.T if out.ndim == 2 else out[None]).astype(np.float32)
