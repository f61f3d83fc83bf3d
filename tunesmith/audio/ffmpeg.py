"""Finding and running ffmpeg. Always an argument list, never a shell; paths go in as absolute
`file:` URLs so that names starting with '-' or holding ':' are only ever file names."""

from __future__ import annotations

import os
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


def _last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if not line.startswith(("Conversion failed", "Error opening output files", "[out#")):
            return line
    return lines[-1] if lines else "no output"


def run_ffmpeg(args: list[str], what: str) -> subprocess.CompletedProcess:
    """Run ffmpeg with `args`; a failure becomes one TunesmithError line naming `what`."""
    command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "info", *args]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise TunesmithError(f"{what}: ffmpeg: {_last_error_line(proc.stderr)}")
    return proc
