"""Scoring videos: plan the outputs, then mux a finished track under the untouched picture."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio.ffmpeg import run_ffmpeg, url
from ..audio.io import unwritable, write_sndfile, written_whole
from ..audio.names import named_output
from ..errors import InvalidParameter, TunesmithError
from .probe import MediaInfo, probe

VIDEO_RATE = 48000  # audio for video: the rate players and platforms expect
AUDIO_CODECS = {".mp4": "aac", ".m4v": "aac", ".mov": "aac", ".mkv": "aac", ".webm": "libopus"}
ORIGINAL_MODES = ("replace", "under", "over")
ORIGINAL_GAIN_DB = (-60.0, 0.0)  # the quieter of the two in a mix; above 0 it would be the louder
ENCODES = 4  # the first encoding and up to three corrected ones
MIX_CEILING_DBTP = -1.0  # a mix with the video's own audio, where no ceiling is asked for
LOUDNESS_TOLERANCE_LU = 1.0  # how far the encoded audio may stray from the loudness target

log = logging.getLogger("tunesmith")


@dataclass
class ScoreJob:
    video: MediaInfo
    output: Path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def plan_jobs(videos: list[str], output: str | None, overwrite: bool) -> list[ScoreJob]:
    """Probe every video and decide every output path before any work starts. An -o folder that does not
    exist yet (its parent does) is made by the caller just before the first video is written."""
    infos = [probe(v) for v in videos]
    to_make = False  # -o names a folder that is made just before the first video goes in (its parent exists)
    if output is not None and (len(infos) > 1 or Path(output).is_dir() or output.endswith(("/", os.sep))):
        folder = Path(output)
        if folder.exists() and not folder.is_dir():
            raise TunesmithError(f"with several videos, -o must be a folder; {folder} is a file")
        if not folder.exists() and not folder.parent.is_dir():
            raise TunesmithError(f"output folder {folder} does not exist, nor does its parent")
        to_make = not folder.exists()
        outputs = [folder / f"{i.path.stem}-scored{i.path.suffix}" for i in infos]
    elif output is not None:  # one video: a name without an extension takes the video's container
        outputs = [named_output(output, infos[0].path.suffix)]
    else:
        outputs = [i.path.with_name(f"{i.path.stem}-scored{i.path.suffix}") for i in infos]
    for info, out in zip(infos, outputs):
        if out.suffix.lower() not in AUDIO_CODECS:
            raise InvalidParameter(f"unsupported video container '{out.suffix or out.name}': "
                                   f"use {', '.join(AUDIO_CODECS)}")
        if _same_file(info.path, out):
            raise TunesmithError(f"the output {out} is the input video: choose another name")
        folder = out.parent.parent if to_make else out.parent
        if not folder.is_dir():
            raise TunesmithError(f"cannot write {out}: folder {out.parent} does not exist")
        why = unwritable(folder)
        if why is not None:
            raise TunesmithError(f"cannot write {out}: {why}")
        if out.exists() and not overwrite:
            raise TunesmithError(f"{out} exists: choose another output or pass --overwrite")
    if len(set(o.resolve() for o in outputs)) < len(outputs):
        raise TunesmithError("two videos would be written to the same output: pass different videos or names")
    return [ScoreJob(info, out) for info, out in zip(infos, outputs)]


def check_original_gain(db: float, what: str = "the original gain") -> float:
    """The level of the quieter of the two in a mix: a number of dB from -60 to 0."""
    low, high = ORIGINAL_GAIN_DB
    if not isinstance(db, (int, float)) or isinstance(db, bool) or not low <= db <= high:  # NaN fails too
        raise InvalidParameter(f"{what} must be from {low:g} to {high:g} dB (the level of the quieter of the two), "
                               f"got {db}")
    return float(db)


def mux(job: ScoreJob, track: np.ndarray, sample_rate: int, original: str = "replace",
        original_gain_db: float = -12.0, ceiling_dbtp: float | None = None,
        loudness_lufs: float | None = None) -> Path:
    """Write job.output: the video stream copied bit for bit, `track` (channels, samples) as its audio.

    original: replace the video's own audio, or keep it `under` the music (at original_gain_db) or
    `over` it (the music at original_gain_db); the mix is made here and true-peak limited at the ceiling
    (-1 dBTP without one). The encoded audio is then decoded and measured: where the lossy codec moved its
    loudness more than LOUDNESS_TOLERANCE_LU from `loudness_lufs`, or its true peak over `ceiling_dbtp`,
    the gain and the limiter are corrected and the audio encoded again; what is still off after
    ENCODES encodings is said in a warning.
    """
    if original not in ORIGINAL_MODES:
        raise InvalidParameter(f"original must be one of {', '.join(ORIGINAL_MODES)}, got {original!r}")
    check_original_gain(original_gain_db)
    mixing = original != "replace" and job.video.audio_codec is not None
    if mixing and ceiling_dbtp is None:  # a loud original can push the encoded mix over: it is held at -1 dBTP
        ceiling_dbtp = MIX_CEILING_DBTP
    with tempfile.TemporaryDirectory() as tmp, written_whole(job.output) as partial:
        audio = _mix(job, track, sample_rate, original, original_gain_db, ceiling_dbtp) if mixing else track
        # With the original kept, the loudness target was the music's alone: the mix is meant to be louder.
        _encode_corrected(job, audio, sample_rate, partial, Path(tmp), None if mixing else loudness_lufs,
                          ceiling_dbtp)
    return job.output


def _encode_corrected(job: ScoreJob, audio: np.ndarray, sample_rate: int, partial: Path, tmp: Path,
                      target_lufs: float | None, ceiling_dbtp: float | None):
    """Encode, measure the decoded result, correct gain (loudness) and limiter (true peak), encode again."""
    from ..audio.finishing import limit, true_peak_dbtp
    from ..audio.io import read_audio

    gain_db, limit_at, shaped = 0.0, ceiling_dbtp, audio
    for attempt in range(ENCODES):
        _mux_once(job, shaped, sample_rate, partial, tmp)
        if target_lufs is None and ceiling_dbtp is None:
            return
        decoded, rate = read_audio(partial)  # read_audio decodes the audio stream through ffmpeg
        over = true_peak_dbtp(decoded, rate) - ceiling_dbtp if ceiling_dbtp is not None else 0.0
        measured = _loudness(decoded, rate) if target_lufs is not None else None
        off = target_lufs - measured if measured is not None else 0.0
        if (over <= 0 and abs(off) <= LOUDNESS_TOLERANCE_LU) or attempt == ENCODES - 1:
            break
        gain_db += off
        if over > 0:  # limit the peaks harder rather than turn everything down: the loudness stays
            limit_at -= over + 0.1
        shaped = audio * np.float32(10 ** (gain_db / 20))
        if limit_at is not None:
            shaped = limit(shaped, sample_rate, limit_at)
    if abs(off) > LOUDNESS_TOLERANCE_LU:
        log.warning("%s: the encoded audio measures %.1f LUFS, off the %g LUFS target by %.1f LU", job.output,
                    measured, target_lufs, abs(off))
    if over > 0:
        log.warning("%s: the encoded audio peaks at %.1f dBTP, over the %g dBTP ceiling", job.output,
                    ceiling_dbtp + over, ceiling_dbtp)


def _loudness(audio: np.ndarray, sample_rate: int) -> float | None:
    """Integrated loudness, or None where there is none to correct (silence, under 0.4 s)."""
    from ..audio.finishing import LOUDNESS_MIN_S, integrated_loudness

    if audio.shape[1] < int(LOUDNESS_MIN_S * sample_rate):
        return None
    measured = integrated_loudness(audio, sample_rate)
    return measured if np.isfinite(measured) else None


def _mix(job: ScoreJob, track: np.ndarray, sample_rate: int, original: str, original_gain_db: float,
         ceiling_dbtp: float) -> np.ndarray:
    """The music and the video's own audio, one of them original_gain_db lower, true-peak limited."""
    from ..audio.finishing import limit
    from ..audio.io import read_audio, resample

    own, rate = read_audio(job.video.path)  # the video's first audio stream, decoded
    own = resample(own, rate, sample_rate)[:, :track.shape[1]]
    own = np.pad(own, ((0, 0), (0, track.shape[1] - own.shape[1])))  # a short original ends in silence
    channels = max(track.shape[0], min(own.shape[0], 2))
    music_db, own_db = (0.0, original_gain_db) if original == "under" else (original_gain_db, 0.0)
    mixed = (_with_channels(track, channels) * np.float32(10 ** (music_db / 20))
             + _with_channels(own, channels) * np.float32(10 ** (own_db / 20)))
    return limit(mixed, sample_rate, ceiling_dbtp)


def _with_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """Mono is copied to every channel; other layouts that differ are folded to mono first."""
    if audio.shape[0] == channels:
        return audio
    mono = audio if audio.shape[0] == 1 else audio.mean(axis=0, keepdims=True)
    return np.repeat(mono, channels, axis=0)


def _mux_once(job: ScoreJob, track: np.ndarray, sample_rate: int, partial: Path, tmp: Path):
    wav = tmp / "track.wav"
    write_sndfile(wav, np.clip(track, -1.0, 1.0), sample_rate, "WAV", "FLOAT",
                  f"muxing {job.output}: cannot write its temporary track in {tmp}")
    codec = AUDIO_CODECS[job.output.suffix.lower()]
    run_ffmpeg(["-y", "-i", url(job.video.path), "-i", url(wav), "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy",
                "-c:a", codec, "-b:a", "192k", "-ar", str(VIDEO_RATE), url(partial)], f"muxing {job.output}")
