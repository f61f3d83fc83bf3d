"""Finding and running ffmpeg. Always an argument list, never a shell; paths go in as absolute
`file:` URLs so that names starting with '-' or holding ':' are only ever file names."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..errors import TunesmithError


def ffmpeg_exe() -> str:
    """The ffmpeg that the imageio-ffmpeg wheel ships, or the system's with TUNESMITH_FFMPEG=system
    (or a path to a binary in TUNESMITH_FFMPEG)."""
    choice = os.environ.get("TUNESMITH_FFMPEG", "")
    if choice == "system":
        exe = shutil.which("ffmpeg")
        if exe is None:
            raise TunesmithError("TUNESMITH_FFMPEG=system but no ffmpeg is on the PATH")
        return exe
    if choice:
        if not Path(choice).is_file():
            raise TunesmithError(f"TUNESMITH_FFMPEG names {choice}, which is not a file")
        return choice
    try:
        import imageio_ffmpeg
    except ImportError:
        raise TunesmithError("ffmpeg is needed: pip install imageio-ffmpeg, or set TUNESMITH_FFMPEG=system") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


def url(path: str | Path) -> str:
    return "file:" + str(Path(path).resolve())


# What ffmpeg prints besides errors: progress and encoder statistics (after any "[aac @ 0x...] " prefix).
_STATISTICS = re.compile(r"(size=|frame=|video:|Lsize=|Qavg|kb/s:|mb [IPB]|frame [IPB]|ref [PB]|"
                         r"Weighted|coded y|i16|i8|i4|8x8|direct|final ratefactor|SSIM|PSNR|consecutive B)")
# Lines that only say that something failed, or repeat the line before: used when nothing better is there.
_GENERIC = re.compile(r"(Conversion failed|Error opening (input|output) (files:|file file:)|Error parsing options|"
                      r"Error initializing filters|Error selecting an encoder|Error while opening encoder|"
                      r"Terminating thread|Task finished with error code|Exiting normally)")
_ERROR_WORDS = re.compile(r"error|invalid|no space left|permission denied|failed|no such file|unknown|"
                          r"not found|could not|cannot|matches no streams", re.IGNORECASE)
_PREFIX = re.compile(r"^(\[[^\]]* @ 0x[0-9a-f]+\] ?)+")


def _last_error_line(stderr: str) -> str:
    """The line of ffmpeg's stderr that says what failed: the last one naming an error, never a
    progress or statistics line, and a generic 'Conversion failed!' only when there is nothing else."""
    lines = []
    for raw in stderr.splitlines():  # progress lines end in \r: splitlines separates them too
        line = raw.strip()
        body = _PREFIX.sub("", line)
        if body and not _STATISTICS.match(body):
            lines.append((line, body))
    specific = [(line, body) for line, body in lines if not _GENERIC.match(body)]
    for candidates in ([line for line, body in specific if _ERROR_WORDS.search(body)],
                       [line for line, body in lines if _ERROR_WORDS.search(body)],
                       [line for line, _ in specific]):
        if candidates:
            return re.sub(r" @ 0x[0-9a-f]+\]", "]", candidates[-1])  # the address means nothing to a user
    return "no output"


def run_ffmpeg(args: list[str], what: str) -> subprocess.CompletedProcess:
    """Run ffmpeg with `args`; a failure becomes one TunesmithError line naming `what`."""
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "info", *args]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise TunesmithError(f"{what}: ffmpeg: {_last_error_line(proc.stderr)}")
    return proc


_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


def probe_seconds(path: str | Path) -> float | None:
    """The duration ffmpeg reads from a file's header (container or stream), without decoding; None when
    it has none or ffmpeg cannot open the file (the decode then says why)."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", url(path)], capture_output=True,
                          text=True, errors="replace")  # no output named: ffmpeg prints what it reads and exits
    found = _DURATION.search(proc.stderr)
    if found is None:
        return None
    hours, minutes, seconds = found.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


class PipeDecoder:
    """The first audio stream of a file decoded by ffmpeg into a pipe as float32 WAV, read block by
    block: no temporary file, and nothing past what the reader takes is held. `max_seconds` stops ffmpeg
    itself a second past it (the reader still counts: a header can lie). Use as a context manager."""

    def __init__(self, path: str | Path, max_seconds: float | None = None):
        limit = ["-t", f"{max_seconds + 1:g}"] if max_seconds is not None else []
        command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", url(path), "-vn",
                   "-map", "0:a:0", *limit, "-c:a", "pcm_f32le", "-f", "wav", "pipe:1"]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.rate, self.channels = _wav_header(self.proc.stdout)  # (0, 0): ffmpeg could not decode it

    def blocks(self, frames: int):
        """(n, channels) float32 arrays of at most `frames` frames, to the end of the stream."""
        size = frames * self.channels * 4
        while chunk := self.proc.stdout.read(size):
            usable = len(chunk) - len(chunk) % (self.channels * 4)
            yield np.frombuffer(chunk[:usable], dtype="<f4").reshape(-1, self.channels)

    def finished_well(self) -> bool:
        return self.proc.wait() == 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()  # stopped early (past a limit): the rest is not wanted
        self.proc.stdout.close()
        self.proc.wait()


def _wav_header(stream) -> tuple[int, int]:
    """(sample rate, channels) from the head of a WAV stream, leaving it at the first sample; (0, 0) if
    it is none. ffmpeg writes a pipe's sizes as 0xFFFFFFFF: the data runs to the end of the stream."""
    if stream.read(12)[8:12] != b"WAVE":
        return 0, 0
    rate = channels = 0
    while len(head := stream.read(8)) == 8:
        kind, size = head[:4], int.from_bytes(head[4:], "little")
        if kind == b"data":
            return (rate, channels) if rate and channels else (0, 0)
        body = stream.read(size + size % 2)
        if kind == b"fmt " and len(body) >= 8:
            channels, rate = int.from_bytes(body[2:4], "little"), int.from_bytes(body[4:8], "little")
    return 0, 0
