"""The tempo estimator on synthetic click tracks: within 1% over the tempi music uses, at the rates the
families make, and nothing reported where there is no beat."""

import numpy as np
import pytest

from tunesmith.audio.checks import check_audio
from tunesmith.audio.tempo import estimate_tempo


def click_track(bpm: float, sample_rate: int = 48000, seconds: float = 12.0, offbeat: float = 0.0,
                seed: int = 0) -> np.ndarray:
    """Stereo clicks (a 1.5 kHz ping of 10 ms, each bar's first louder) on every beat, an optional softer
    click on every off-beat, and a little noise."""
    n = int(seconds * sample_rate)
    audio = np.zeros(n)
    ping = np.exp(-np.arange(480) / 60) * np.sin(2 * np.pi * 1500 * np.arange(480) / sample_rate)
    beat = 60.0 / bpm
    for k in range(int(seconds / beat) + 1):
        for at, level in ((k * beat, 1.3 if k % 4 == 0 else 1.0), ((k + 0.5) * beat, offbeat)):
            i = round(at * sample_rate)
            if level and i + len(ping) <= n:
                audio[i:i + len(ping)] += level * ping
    audio += 0.01 * np.random.default_rng(seed).standard_normal(n)
    return np.stack([audio, audio]).astype(np.float32)


@pytest.mark.parametrize("bpm", [45, 60, 72.5, 87, 100, 124, 137, 150, 174, 200, 230])
def test_click_tracks_within_one_percent(bpm):
    assert estimate_tempo(click_track(bpm), 48000) == pytest.approx(bpm, rel=0.01)


@pytest.mark.parametrize("bpm, sample_rate", [(124, 32000), (96, 44100), (140, 44100)])
def test_other_sample_rates(bpm, sample_rate):
    assert estimate_tempo(click_track(bpm, sample_rate), sample_rate) == pytest.approx(bpm, rel=0.01)


def test_off_beats_do_not_hide_the_beat():
    """Softer clicks on the off-beats: the tempo still, not two thirds or half of it."""
    assert estimate_tempo(click_track(124, offbeat=0.4), 48000) == pytest.approx(124, rel=0.01)


def test_no_beat_no_tempo():
    rng = np.random.default_rng(1)
    assert estimate_tempo(0.1 * rng.standard_normal((2, 48000 * 8)).astype(np.float32), 48000) is None
    assert estimate_tempo(np.zeros((2, 48000 * 8), np.float32), 48000) is None
    assert estimate_tempo(click_track(120, seconds=2.0), 48000) is None  # too short to say


def test_the_output_check_reports_it():
    clicks = click_track(124)
    assert check_audio(clicks, 48000).tempo == pytest.approx(124, rel=0.01)
    assert check_audio(clicks).tempo is None  # no rate given: not measured
