import numpy as np
import pytest
import soundfile as sf

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
