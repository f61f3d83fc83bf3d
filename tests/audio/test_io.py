import os

import numpy as np
import pytest
import soundfile as sf

from tunesmith.audio.ffmpeg import _last_error_line, run_ffmpeg
from tunesmith.audio.io import read_audio, resample, write_audio
from tunesmith.errors import InvalidParameter, TunesmithError

from .test_finishing import SR, music


@pytest.mark.parametrize("name, wav_format, subtype", [("a.wav", "pcm16", "PCM_16"), ("a.wav", "pcm24", "PCM_24"),
                                                       ("a.wav", "float", "FLOAT"), ("a.flac", "pcm16", "PCM_16"),
                                                       ("a.flac", "pcm24", "PCM_24")])
def test_lossless_formats(tmp_path, name, wav_format, subtype):
    x = 0.5 * music(1.0)
    path = write_audio(tmp_path / name, x, SR, wav_format)
    info = sf.info(str(path))
    assert info.subtype == subtype and info.frames == SR and info.channels == 2 and info.samplerate == SR
    back, rate = read_audio(path)
    np.testing.assert_allclose(back, x, atol=1 / 2**15 + 1e-6)


@pytest.mark.parametrize("name", ["a.mp3", "a.ogg", "a.m4a", "-starts-with-dash: and colon.mp3"])
def test_compressed_formats_open_with_the_right_length(tmp_path, name):
    x = 0.5 * music(2.0)
    path = write_audio(tmp_path / name, x, SR)
    assert path.exists() and not list(tmp_path.glob(".*partial*"))
    back, rate = read_audio(path)
    assert rate == SR and back.shape[0] == 2
    assert abs(back.shape[1] - 2 * SR) <= 2048 + 1152  # encoder priming / padding, at most a frame or two


def test_bad_outputs_and_inputs(tmp_path):
    with pytest.raises(InvalidParameter, match="unsupported output format"):
        write_audio(tmp_path / "a.aiff", music(0.1), SR)
    with pytest.raises(InvalidParameter, match="wav format"):
        write_audio(tmp_path / "a.wav", music(0.1), SR, "pcm8")
    (tmp_path / "notes.txt").write_text("not audio")
    with pytest.raises(TunesmithError, match="not an audio file"):
        read_audio(tmp_path / "notes.txt")
    with pytest.raises(TunesmithError, match="does not exist"):
        read_audio(tmp_path / "missing.wav")


def test_resample_keeps_duration_and_pitch():
    t = np.arange(SR) / SR
    x = np.sin(2 * np.pi * 1000 * t)[None].astype(np.float32)
    y = resample(x, SR, 48000)
    assert y.shape == (1, 48000)
    spectrum = np.abs(np.fft.rfft(y[0]))
    assert abs(np.argmax(spectrum) - 1000) <= 1


# Shaped like ffmpeg 7's stderr when the disk fills: the error comes before the statistics and the
# last progress line (which ends in \r, not \n).
DISK_FULL = """Output #0, mp3, to 'file:/out/track.mp3':
  Stream #0:0: Audio: mp3, 44100 Hz, mono, s16p
[out#0/mp3 @ 0x564d4c6de380] Error writing trailer: No space left on device
[out#0/mp3 @ 0x564d4c6de380] Error closing file: No space left on device
[out#0/mp3 @ 0x564d4c6de380] video:0KiB audio:235KiB subtitle:0KiB other streams:0KiB muxing overhead: 0.09%
size=     257KiB time=00:00:30.00 bitrate=  64.1kbits/s speed= 185x elapsed=0:00:00.11    \r
[aac @ 0x55d898939940] Qavg: 16701.150
Conversion failed!
"""


@pytest.mark.parametrize("stderr, expected", [
    (DISK_FULL, "[out#0/mp3] Error closing file: No space left on device"),
    ("[in#0 @ 0x55c580f76d00] Error opening input: No such file or directory\n"
     "Error opening input file file:/x.wav.\nError opening input files: No such file or directory\n",
     "[in#0] Error opening input: No such file or directory"),
    ("[aost#0:0 @ 0x55a28edf2d80] Unknown encoder 'foo'\n[aost#0:0 @ 0x55a28edf2d80] Error selecting an encoder\n"
     "Error opening output file file:/tmp/x.wav.\nError opening output files: Encoder not found\n",
     "[aost#0:0] Unknown encoder 'foo'"),
    ("[out#0/wav @ 0x55d16c23ad80] Error opening output file:/proc/x.wav: Permission denied\n"
     "Error opening output file file:/proc/x.wav.\nError opening output files: Permission denied\n",
     "[out#0/wav] Error opening output file:/proc/x.wav: Permission denied"),
    ("frame=  100 fps=0.0 q=-1.0 Lsize=  20KiB time=00:00:04.00 bitrate=  40kbits/s speed= 50x\r"
     "[libx264 @ 0x5621a25d2800] kb/s:36.29\nConversion failed!\n", "Conversion failed!"),
    ("", "no output"),
], ids=["disk full", "no input", "unknown encoder", "permission denied", "only progress", "silent"])
def test_ffmpeg_errors_name_what_failed_not_the_progress(stderr, expected):
    assert _last_error_line(stderr) == expected


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_reported_as_such():
    with pytest.raises(TunesmithError, match="No space left on device"):
        run_ffmpeg(["-y", "-f", "lavfi", "-i", "sine=duration=30", "-f", "mp3", "file:/dev/full"], "writing")
