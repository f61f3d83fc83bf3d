"""Reading and writing audio files: WAV and FLAC through libsndfile (soundfile), MP3, Ogg Vorbis
and M4A (AAC) through ffmpeg."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InvalidParameter, NoSpace, TunesmithError

WAV_FORMATS = {"pcm16": "PCM_16", "pcm24": "PCM_24", "float": "FLOAT"}
SNDFILE = {".wav": "WAV", ".flac": "FLAC"}
# Compressed formats: ffmpeg encoder arguments.
FFMPEG_CODECS = {
    ".mp3": ["-c:a", "libmp3lame", "-b:a", "192k"],
    ".ogg": ["-c:a", "libvorbis", "-q:a", "6"],
    ".m4a": ["-c:a", "aac", "-b:a", "192k"],
}
FORMATS = tuple(SNDFILE) + tuple(FFMPEG_CODECS)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, or the user's quota on it
NO_SPACE_WORDS = ("no space left on device", "disk quota exceeded")  # the same, as ffmpeg reports them


def is_no_space(err: OSError) -> bool:
    return err.errno in NO_SPACE


def check_output_path(path: Path) -> Path:
    """Refuse, before any work, a path we could not write: a folder, an unknown format, a missing or
    read-only folder, or a compressed format without an ffmpeg to encode it."""
    path = Path(path)
    if path.is_dir():
        raise TunesmithError(f"cannot write {path}: it is a folder; give a file name such as {path / 'music.wav'}")
    if path.suffix.lower() not in FORMATS:
        raise InvalidParameter(f"unsupported output format '{path.suffix or path.name}': use {', '.join(FORMATS)}")
    folder = path.parent
    if not folder.is_dir():
        raise TunesmithError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise TunesmithError(f"cannot write {path}: permission denied")
    if path.suffix.lower() in FFMPEG_CODECS:
        from .ffmpeg import ffmpeg_exe

        ffmpeg_exe()  # found now, not after the audio is made
    return path


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

    from .ffmpeg import run_ffmpeg, url

    with tempfile.TemporaryDirectory() as tmp, written_whole(path) as partial:
        source = Path(tmp) / "source.wav"
        write_sndfile(source, np.clip(audio, -1.0, 1.0), sample_rate, "WAV", "FLOAT",
                      f"cannot write {path}: its temporary source in {tmp}")
        try:
            run_ffmpeg(["-y", "-i", url(source), "-vn", *codec, url(partial)], f"cannot write {path}")
        except TunesmithError as err:  # ffmpeg says why in words only
            if any(words in str(err).lower() for words in NO_SPACE_WORDS):
                raise NoSpace(f"cannot write {path}: no space left on the device") from None
            raise
    return path


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Any audio file -> ((channels, samples) float32, sample rate). libsndfile first, ffmpeg for the rest."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise TunesmithError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        return data.T.copy(), rate
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass
    from .ffmpeg import run_ffmpeg, url

    with tempfile.TemporaryDirectory() as tmp:
        decoded = Path(tmp) / "decoded.wav"
        try:
            run_ffmpeg(["-i", url(path), "-vn", "-map", "0:a:0", "-c:a", "pcm_f32le", url(decoded)], "decode")
        except TunesmithError:
            raise TunesmithError(f"{path} is not an audio file that can be read") from None
        data, rate = sf.read(str(decoded), dtype="float32", always_2d=True)
    return data.T.copy(), rate


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """(channels, samples) -> (channels, samples * to / from), soxr's high quality."""
    import soxr

    if from_rate == to_rate:
        return audio
    out = soxr.resample(np.ascontiguousarray(audio.T), from_rate, to_rate, quality="HQ")
    return (out.T if out.ndim == 2 else out[None]).astype(np.float32)
