"""Scoring videos: plan the outputs, then mux a finished track under the untouched picture."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidParameter, TunesmithError
from ..audio.ffmpeg import run_ffmpeg, url
from ..audio.io import written_whole
from .probe import MediaInfo, probe

VIDEO_RATE = 48000  # audio for video: the rate players and platforms expect
AUDIO_CODECS = {".mp4": "aac", ".m4v": "aac", ".mov": "aac", ".mkv": "aac", ".webm": "libopus"}
ORIGINAL_MODES = ("replace", "under", "over")


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
    """Probe every video and decide every output path before any work starts."""
    infos = [probe(v) for v in videos]
    if output is not None and (len(infos) > 1 or Path(output).is_dir() or output.endswith(("/", os.sep))):
        folder = Path(output)
        if not folder.is_dir():
            raise TunesmithError(f"with several videos, -o must be an existing folder; {folder} is not one")
        outputs = [folder / f"{i.path.stem}-scored{i.path.suffix}" for i in infos]
    elif output is not None:
        outputs = [Path(output)]
    else:
        outputs = [i.path.with_name(f"{i.path.stem}-scored{i.path.suffix}") for i in infos]
    for info, out in zip(infos, outputs):
        if out.suffix.lower() not in AUDIO_CODECS:
            raise InvalidParameter(f"unsupported video container '{out.suffix or out.name}': "
                                   f"use {', '.join(AUDIO_CODECS)}")
        if _same_file(info.path, out):
            raise TunesmithError(f"the output {out} is the input video: choose another name")
        if not out.parent.is_dir():
            raise TunesmithError(f"cannot write {out}: folder {out.parent} does not exist")
        if not os.access(out.parent, os.W_OK):
            raise TunesmithError(f"cannot write {out}: permission denied")
        if out.exists() and not overwrite:
            raise TunesmithError(f"{out} exists: choose another output or pass --overwrite")
    if len(set(o.resolve() for o in outputs)) < len(outputs):
        raise TunesmithError("two videos would be written to the same output: pass different videos or names")
    return [ScoreJob(info, out) for info, out in zip(infos, outputs)]


def mux(job: ScoreJob, track: np.ndarray, sample_rate: int, original: str = "replace",
        original_gain_db: float = -12.0, ceiling_dbtp: float | None = None) -> Path:
    """Write job.output: the video stream copied bit for bit, `track` (channels, samples) as its audio.

    original: replace the video's own audio, or keep it `under` the music (at original_gain_db) or
    `over` it (the music at original_gain_db). ceiling_dbtp: the encoded audio's true peak is measured
    and, where the lossy codec pushed it over the ceiling, the peaks are limited that much lower and the
    audio encoded again (up to three times).
    """
    if original not in ORIGINAL_MODES:
        raise InvalidParameter(f"original must be one of {', '.join(ORIGINAL_MODES)}, got {original!r}")
    from ..audio.finishing import limit

    with tempfile.TemporaryDirectory() as tmp, written_whole(job.output) as partial:
        _mux_once(job, track, sample_rate, original, original_gain_db, partial, Path(tmp))
        ceiling = ceiling_dbtp
        for _ in range(3 if ceiling_dbtp is not None else 0):
            over = _encoded_true_peak(partial) - ceiling_dbtp
            if over <= 0:
                break
            # Limit the peaks harder rather than turning everything down: the loudness stays.
            ceiling -= over + 0.1
            _mux_once(job, limit(track, sample_rate, ceiling), sample_rate, original, original_gain_db,
                      partial, Path(tmp))
    return job.output


def _mux_once(job: ScoreJob, track, sample_rate, original, original_gain_db, partial: Path, tmp: Path):
    import soundfile as sf

    wav = tmp / "track.wav"
    sf.write(str(wav), np.clip(track, -1.0, 1.0).T, sample_rate, subtype="FLOAT")
    args = ["-y", "-i", url(job.video.path), "-i", url(wav)]
    if original == "replace" or job.video.audio_codec is None:
        args += ["-map", "0:v:0", "-map", "1:a:0"]
    else:
        music_db, original_db = (0.0, original_gain_db) if original == "under" else (original_gain_db, 0.0)
        graph = (f"[1:a:0]volume={music_db}dB[music];[0:a:0]aresample={sample_rate},volume={original_db}dB[orig];"
                 "[music][orig]amix=inputs=2:duration=first:normalize=0,alimiter=limit=0.89[mix]")
        args += ["-filter_complex", graph, "-map", "0:v:0", "-map", "[mix]"]
    codec = AUDIO_CODECS[job.output.suffix.lower()]
    args += ["-c:v", "copy", "-c:a", codec, "-b:a", "192k", "-ar", str(VIDEO_RATE), url(partial)]
    run_ffmpeg(args, f"muxing {job.output}")


def _encoded_true_peak(path: Path) -> float:
    from ..audio.finishing import true_peak_dbtp
    from ..audio.io import read_audio

    return true_peak_dbtp(*read_audio(path))  # read_audio decodes the audio stream through ffmpeg
