"""Finding and running ffmpeg. Always an argument list, never a shell; paths go in as absolute
`file:` URLs so that names starting with '-' or holding ':' are only ever file names."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

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
