"""The output check and the tempo estimator report what the plain code they replaced reported
(tests/audio/reference_checks.py), beyond float rounding: the same problems, the measures within 1e-6
relative, the tempo within 0.05 bpm; on the paths the cheaper code adds (a whole or a fractional onset hop,
silent frames, flat tops at a chunk edge, audio that needs no mending and audio that does)."""

import numpy as np
import pytest

from tunesmith.audio import checks, tempo
from tunesmith.audio.checks import CHUNK, check_audio

from .reference_checks import onset_strength, reference_check, reference_tempo, spectral_flatness
from .test_tempo import click_track


def music(seconds: float, rate: int, channels: int = 2, bpm: float = 124.0, seed: int = 0) -> np.ndarray:
    """A triad, clicks on the beat (test_tempo's) and a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    chord = sum(0.15 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))
    clicks = click_track(bpm, rate, seconds, seed=seed)[0]
    audio = np.stack([chord + clicks, 0.8 * chord + clicks])[:channels]
    return (0.8 * audio / np.abs(audio).max()).astype(np.float32)


def _edge_clipped() -> np.ndarray:
    """A tone clipped at 0.6 over two chunks, with a flat top held across the chunk edge."""
    n = CHUNK + 50000
    audio = np.clip(0.9 * np.sin(2 * np.pi * 440 * np.arange(n) / 44100), -0.6, 0.6)
    audio[CHUNK - 2 : CHUNK + 3] = 0.6
    return audio[None].astype(np.float32)


def _with_nan() -> np.ndarray:
    audio = music(6, 48000)
    audio[:, 1000:3000] = np.nan
    audio[1, 9000] = np.inf
    return audio


SIGNALS = {
    "music, 44.1 kHz stereo (a fractional hop)": (lambda: music(20, 44100), 44100),
    "music, 48 kHz stereo (a whole hop)": (lambda: music(12, 48000, bpm=96), 48000),
    "music past a minute, 32 kHz mono": (lambda: music(65, 32000, 1, bpm=140), 32000),
    "music with silent stretches": (lambda: music(10, 32000, 1) * (np.arange(320000) % 96000 < 60000), 32000),
    "white noise, 48 kHz stereo": (lambda: np.random.default_rng(2).normal(0, 0.3, (2, 8 * 48000)), 48000),
    "float64, three channels": (lambda: np.concatenate([music(8, 44100), music(8, 44100, 1, 80)]).astype(float), 44100),
    "clipped across a chunk edge": (_edge_clipped, 44100),
    "NaN and inf": (_with_nan, 48000),
    "a DC offset": (lambda: music(5, 32000) + np.float32(0.1), 32000),
    "shorter than a frame": (lambda: music(0.03, 32000), 32000),
    "near silence": (lambda: 1e-5 * music(5, 32000), 32000),
}


def close(a: float, b: float, rel: float = 1e-6, floor: float = 0.0) -> bool:
    return a == b or abs(a - b) <= max(rel * max(abs(a), abs(b)), floor)


@pytest.mark.parametrize("name", SIGNALS)
def test_the_check_reports_what_the_plain_code_did(name):
    make, rate = SIGNALS[name]
    audio = make()
    new, old = check_audio(audio, rate), reference_check(audio, rate)
    assert new.problems == old.problems and new.ok == old.ok
    for field in ("peak", "rms_dbfs", "dc_offset", "clipped_fraction"):
        assert close(getattr(new, field), getattr(old, field)), (field, getattr(new, field), getattr(old, field))
    # a tone's flatness (1e-7) is the FFT's rounding noise between its partials: there, 1e-9 of it
    assert close(new.flatness, old.flatness, floor=1e-9), (new.flatness, old.flatness)
    assert (new.tempo is None) == (old.tempo is None)
    if new.tempo is not None:
        assert new.tempo == pytest.approx(old.tempo, abs=0.05)
    if name == "clipped across a chunk edge":
        assert new.clipped_fraction > 0.01


@pytest.mark.parametrize("rate", [32000, 44100, 48000])
def test_onsets_and_flatness_frame_by_frame(rate):
    mono = checks.mix_down(music(9, rate))
    new, old = tempo.onset_strength(mono, rate), onset_strength(mono, rate)
    assert new.shape == old.shape and np.abs(new - old).max() <= 1e-5 * np.abs(old).max()
    new, old = checks.spectral_flatness(mono), spectral_flatness(mono)
    assert new.shape == old.shape and np.abs(new - old).max() <= 1e-5 * old.max()


@pytest.mark.parametrize("bpm, rate", [(45, 48000), (124, 44100), (174, 32000), (230, 48000)])
def test_tempo_as_before(bpm, rate):
    clicks = click_track(bpm, rate, offbeat=0.3)
    assert tempo.estimate_tempo(clicks, rate) == pytest.approx(reference_tempo(clicks, rate), abs=0.05)


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_mix_down_is_the_mean_of_the_channels(channels):
    x = np.random.default_rng(channels).standard_normal((channels, 10001)).astype(np.float32)
    assert np.array_equal(tempo.mix_down(x), x.mean(axis=0))
