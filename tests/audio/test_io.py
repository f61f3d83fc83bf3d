import os

import numpy as np
import pytest
import soundfile as sf

from tunesmith.audio.ffmpeg import _last_error_line, run_ffmpeg
from tunesmith.audio.io import probe_audio, read_audio, resample, write_audio
from tunesmith.errors import InvalidParameter, TooLong, TunesmithError

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


# ---- decoded length: refused from the header, bounded while decoding, memory measured
def traced_peak(work) -> tuple[object, int]:
    """(what work() returned or raised, the peak of Python and numpy memory while it ran, in bytes)."""
    import tracemalloc

    tracemalloc.start()
    try:
        try:
            result = work()
        except Exception as err:  # noqa: BLE001 - handed back to be asserted on
            result = err
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


MB = 1 << 20


def test_a_decompression_bomb_is_refused_from_its_header_before_decoding(tmp_path):
    from .long_files import silent_flac

    bomb = silent_flac(tmp_path / "bomb.flac", 1800)  # 30 minutes: a few dozen KB, 115 MB decoded
    assert bomb.stat().st_size < MB
    for reader in (read_audio, probe_audio):
        err, peak = traced_peak(lambda: reader(bomb, 60, "the bomb"))
        assert isinstance(err, TooLong) and str(err) == "the bomb lasts 1800.0 s: more than the 60 s allowed"
        assert peak < 2 * MB, peak  # nothing decoded


def test_a_header_claiming_2_36_samples_is_refused_not_a_memory_error(tmp_path):
    from .long_files import claim_frames, silent_flac

    liar = claim_frames(silent_flac(tmp_path / "liar.flac", 2), 2**36 - 1)
    err, peak = traced_peak(lambda: read_audio(liar, 600))
    assert isinstance(err, TooLong) and "lasts 4294967.3 s: more than the 600 s allowed" in str(err)
    assert peak < 2 * MB


def test_a_length_no_header_gives_is_bounded_while_decoding(tmp_path):
    from .long_files import claim_frames, silent_flac

    unknown = claim_frames(silent_flac(tmp_path / "unknown.flac", 60, 48000, 2), 0)  # 23 MB decoded
    err, peak = traced_peak(lambda: read_audio(unknown, 5, "it"))
    assert isinstance(err, TooLong) and str(err) == "it lasts more than 5.0 s: more than the 5 s allowed"
    allowed = 5 * 48000 * 2 * 4  # the array of the allowed length
    assert peak < allowed + 2 * MB, peak
    audio, rate = read_audio(unknown)  # no limit: all of it (ffmpeg reads what libsndfile cannot)
    assert audio.shape == (2, 60 * 48000) and rate == 48000


def test_files_only_ffmpeg_reads_are_probed_first(tmp_path):
    path = write_audio(tmp_path / "long.m4a", 0.5 * music(12.0), SR)
    with pytest.raises(TooLong, match=r"^long lasts 12\.0 s: more than the 5 s allowed$"):  # the probe's length
        read_audio(path, 5, "long")
    assert read_audio(path, 15)[0].shape[1] >= 12 * SR


def test_rate_and_channels_count_against_the_limit(tmp_path):
    path = tmp_path / "wide.wav"
    sf.write(str(path), np.zeros((192000, 8), np.float32), 192000, subtype="FLOAT")  # 1 s, 8 channels
    with pytest.raises(TooLong, match=r"lasts 1\.0 s at 192000 Hz with 8 channels \(counted as 48 kHz stereo\): "
                                      r"more than the 2 s allowed"):
        read_audio(path, 2)
    assert read_audio(path, 16)[0].shape == (8, 192000)


def test_probing_holds_one_block_not_the_audio(tmp_path):
    path = tmp_path / "minute.wav"
    with sf.SoundFile(str(path), "w", 48000, 2, subtype="FLOAT") as out:
        for _ in range(60):
            out.write(np.full((48000, 2), 0.25, np.float32))
        out.write(np.array([[np.nan, 0.0]], np.float32))
    info, peak = traced_peak(lambda: probe_audio(path, 120))
    assert (info.sample_rate, info.channels, info.finite) == (48000, 2, False)
    assert info.seconds == pytest.approx(60 + 1 / 48000)
    assert peak < 2 * MB, peak  # the audio is 23 MB
    (audio, _), peak = traced_peak(lambda: read_audio(path, 120))
    assert peak < audio.nbytes + 2 * MB  # one array of the audio, no second copy


def test_ffmpeg_leaves_nothing_in_the_temp_folder(tmp_path, monkeypatch):
    """The encoder's source is written beside the output (a hidden partial name, swept like the others)
    and decoding goes through a pipe: a kill -9 leaves nothing in the system's temp folder."""
    import subprocess
    import tempfile

    temp, out = tmp_path / "temp", tmp_path / "out"
    temp.mkdir()
    out.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    seen = []

    class Watched(subprocess.Popen):  # the real Popen; it notes what is on disk as each ffmpeg starts
        def __init__(self, *args, **kwargs):
            seen.append((sorted(p.name for p in temp.rglob("*")), sorted(p.name for p in out.iterdir())))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", Watched)
    path = write_audio(out / "a.m4a", 0.5 * music(1.0), SR)
    assert read_audio(path)[0].shape[0] == 2
    assert seen and all(not in_temp for in_temp, _ in seen)
    assert ".a.m4a.partial.source.wav" in seen[0][1]
    assert sorted(p.name for p in out.iterdir()) == ["a.m4a"]
