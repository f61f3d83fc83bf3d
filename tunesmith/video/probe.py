"""What a video holds: its streams and the packets of its picture, read by ffmpeg without decoding."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ..audio.ffmpeg import ffmpeg_exe, run_ffmpeg, url
from ..errors import TunesmithError


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
