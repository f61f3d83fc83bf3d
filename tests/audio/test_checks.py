import numpy as np
import pytest

from tunesmith.audio.checks import check_audio

SR = 32000
T = np.arange(SR * 3) / SR


def tone(f, a=0.5):
    return a * np.sin(2 * np.pi * f * T)


def _chord():
    return sum(tone(f, 0.2) for f in (261.63, 329.63, 392.0))


@pytest.mark.parametrize("name, audio", [
    ("tone", tone(440)[None]),
    ("low bass tone", tone(41.2)[None]),
    ("quiet tone", tone(100, 0.01)[None]),
    ("chord", _chord()[None]),
    ("stereo chord", np.stack([_chord(), 0.8 * _chord()])),
    ("tone with a silent half", np.where(T < 1.5, tone(220), 0.0)[None]),
])
def test_musical_signals_pass(name, audio):
    result = check_audio(audio.astype(np.float32))
    assert result.ok, f"{name}: {result.summary()}"
    assert result.flatness < 0.05


def _noise():
    return 0.3 * np.random.default_rng(0).standard_normal((1, T.size))


@pytest.mark.parametrize("name, audio, problem", [
    ("white noise", _noise(), "static"),
    ("silence", np.zeros((1, T.size)), "silent"),
    ("near silence", tone(440, 1e-4)[None], "silent"),
    ("NaN", np.where(T > 1, np.nan, tone(440))[None], "NaN"),
    ("inf", np.where(T > 2, np.inf, tone(440))[None], "NaN or infinite"),
    ("hard clipping", np.clip(3 * tone(440), -1, 1)[None], "clipped"),
    ("clipping below full scale", np.clip(3 * tone(440), -0.7, 0.7)[None], "clipped"),
    ("over full scale", tone(440, 1.5)[None], "above full scale"),
    ("DC offset", tone(440)[None] + 0.2, "DC offset"),
])
def test_broken_signals_fail(name, audio, problem):
    result = check_audio(audio.astype(np.float32))
    assert not result.ok, name
    assert problem in result.summary(), result.summary()
    assert result.advice().startswith("the file was kept; ") and "seed" in result.advice()


@pytest.mark.parametrize("audio, summary, todo", [
    (tone(440)[None] + 0.12, "DC offset 0.12", "try another seed"),
    (np.zeros((1, T.size)), "silent (RMS -inf dBFS)", "try another seed or a fuller prompt"),
    (tone(440, 1.5)[None], "peak 1.50 is above full scale and will clip when written",
     "set a loudness target (e.g. -14 LUFS) to bring it under full scale, or try another seed"),
    (np.where(T > 1, np.nan, tone(440))[None], "66.7% of samples are NaN or infinite",
     "try another seed, or full precision (float32) if it happens again"),
])
def test_a_failed_check_says_why_and_what_to_do(audio, summary, todo):
    result = check_audio(audio.astype(np.float32))
    assert (result.summary(), result.advice()) == (summary, f"the file was kept; {todo}")
    assert check_audio(tone(440)[None]).advice() == ""


def test_metrics_are_reported():
    result = check_audio(tone(440)[None])
    assert result.peak == pytest.approx(0.5, abs=1e-3)
    assert result.rms_dbfs == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.05)
    assert result.dc_offset < 1e-3 and result.clipped_fraction == 0
