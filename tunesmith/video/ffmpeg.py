"""Finding and running ffmpeg. Always an argument list, never a shell; paths go in as absolute
`file:` URLs so that names starting with '-' or holding ':' are only ever file names."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
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


@contextlib.contextmanager
def written_whole(path: Path):
    """Yield a temporary name beside `path`; only a complete file replaces `path`, so a failure never
    leaves half a file or touches one already there."""
    partial = path.with_name(f".{path.name}.partial{path.suffix}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


@dataclass
class StreamPackets:
    """Packets of one stream as ffmpeg's framemd5 muxer lists them (stream copy, nothing decoded)."""

    time_base: Fraction
    packets: list[tuple[int, int, str]] = field(default_factory=list)  # (pts, duration, md5 of the data)

    @property
    def duration(self) -> float:
        if not self.packets:
            return 0.0
        start = min(p for p, _, _ in self.packets)
        end = max(p + d for p, d, _ in self.packets)
        return float((end - start) * self.time_base)


@dataclass
class MediaInfo:
    path: Path
    video_codec: str | None
    audio_codec: str | None
    video: StreamPackets

    @property
    def duration(self) -> float:
        return self.video.duration


def stream_packets(path: Path, selector: str, what: str) -> StreamPackets:
    """Packets of the first stream matching `selector` ('v:0', 'a:0'), copied, with their hashes."""
    proc = run_ffmpeg(["-i", url(path), "-map", f"0:{selector}", "-c", "copy", "-f", "framemd5", "-"], what)
    tb = Fraction(1)
    packets = []
    for line in proc.stdout.splitlines():
        if line.startswith("#tb"):
            tb = Fraction(line.split(":", 1)[1].strip())
        elif line and not line.startswith("#"):
            parts = [p.strip() for p in line.split(",")]
            packets.append((int(parts[2]), int(parts[3]), parts[5]))  # stream, dts, pts, duration, size, md5
    return StreamPackets(tb, packets)


_STREAM = re.compile(r"Stream #\d+:\d+.*?: (Video|Audio): (\w+)")


def probe(path: str | Path) -> MediaInfo:
    """What a video holds; refuses with one clear line anything that is not a usable video."""
    path = Path(path)
    if not path.exists():
        raise TunesmithError(f"{path} does not exist")
    if not path.is_file():
        raise TunesmithError(f"{path} is not a file")
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", url(path)], capture_output=True, text=True)
    streams = _STREAM.findall(proc.stderr)
    if not streams and ("Invalid data" in proc.stderr or "could not find" in proc.stderr.lower()
                        or "Error opening input" in proc.stderr):
        raise TunesmithError(f"{path} is not a video file ffmpeg can read")
    video = next((codec for kind, codec in streams if kind == "Video"), None)
    audio = next((codec for kind, codec in streams if kind == "Audio"), None)
    if video is None:
        raise TunesmithError(f"{path} has no video stream")
    packets = stream_packets(path, "v:0", f"reading {path}")
    if packets.duration <= 0:
        raise TunesmithError(f"{path} has a video stream of zero length")
    return MediaInfo(path, video, audio, packets)
