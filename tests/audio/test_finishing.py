import numpy as np
import pytest

from tunesmith.audio.finishing import (crossfade, equal_power_curves, fade, fit_length, integrated_loudness,
                                       limit, normalize_loudness, remove_dc, true_peak_dbtp)
from tunesmith.clip import Clip
from tunesmith.errors import InvalidParameter, TunesmithError

SR = 32000


def music(seconds=6.0, channels=2, seed=0):
    """A chord with a slow swell, a few hard transients and a little noise: music-like enough."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = sum(0.2 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (110.0, 138.6, 164.8, 220.0))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t)) + 0.01 * rng.standard_normal(t.size)
    x[(t * 2 % 1) < 0.002] += 0.8  # clicks that push the peak
    return np.stack([x, 0.9 * x][:channels]).astype(np.float32)


def test_equal_power_curves():
    fade_in, fade_out = equal_power_curves(1000)
    np.testing.assert_allclose(fade_in**2 + fade_out**2, 1.0, atol=1e-12)
    assert fade_in[0] < 0.01 and fade_in[-1] > 0.99 and np.all(np.diff(fade_in) > 0)


def test_fade_shapes_the_ends_only():
    x = np.ones((2, SR * 3), dtype=np.float32)
    y = fade(x, SR, fade_in=0.5, fade_out=1.0)
    assert y[0, 0] < 0.01 and y[0, -1] < 0.01
    np.testing.assert_allclose(y[:, SR // 2:2 * SR], 1.0)
    np.testing.assert_allclose(y[0, : SR // 2], equal_power_curves(SR // 2)[0], rtol=1e-6)
    with pytest.raises(InvalidParameter, match="longer than the clip"):
        fade(x, SR, fade_in=2, fade_out=2)
    with pytest.raises(InvalidParameter, match="fade-in"):
        fade(x, SR, fade_in=-1)


def test_fit_length_is_exact():
    x = music(2.0)
    assert fit_length(x, SR, 1.5).shape == (2, 48000)
    padded = fit_length(x, SR, 2.5)
    assert padded.shape == (2, 80000) and not padded[:, 64000:].any()
    np.testing.assert_array_equal(padded[:, :64000], x)


def test_crossfade_keeps_power_and_length():
    a, b = music(2.0, seed=1), music(2.0, seed=2)
    joined = crossfade(a, b, SR, 0.5)
    assert joined.shape == (2, 4 * SR - SR // 2)
    np.testing.assert_array_equal(joined[:, :SR], a[:, :SR])
    np.testing.assert_array_equal(joined[:, -SR:], b[:, -SR:])


@pytest.mark.parametrize("target", [-14.0, -23.0, -9.0])
def test_loudness_target_and_true_peak_ceiling(target):
    y = normalize_loudness(music(), SR, target, -1.0)
    assert abs(integrated_loudness(y, SR) - target) < 1.0
    assert true_peak_dbtp(y, SR) <= -1.0


def test_limiter_leaves_quiet_audio_alone_and_catches_peaks():
    quiet = 0.1 * music()
    np.testing.assert_array_equal(limit(quiet, SR, -1.0), quiet)
    loud = 4 * music()
    limited = limit(loud, SR, -1.0)
    assert true_peak_dbtp(limited, SR) <= -1.0
    # away from the peaks the level is barely touched: a limiter, not a compressor
    t = np.arange(loud.shape[1]) / SR
    calm = ((t * 2 % 1) > 0.25) & ((t * 2 % 1) < 0.45)
    ratio = np.abs(limited[0, calm]).mean() / np.abs(loud[0, calm]).mean()
    assert ratio > 0.2


def test_true_peak_sees_intersample_peaks():
    t = np.arange(SR) / SR
    x = np.sin(2 * np.pi * (SR / 4) * t + np.pi / 4)[None]  # samples at +-0.707 of a full-scale sine
    assert np.abs(x).max() < 0.71 and true_peak_dbtp(x, SR) > -0.5


def test_silence_and_short_clips_cannot_be_normalised():
    with pytest.raises(TunesmithError, match="silent"):
        normalize_loudness(np.zeros((1, SR)), SR)
    with pytest.raises(TunesmithError, match="shorter than 0.4 s"):
        normalize_loudness(music(0.2), SR)


def test_remove_dc_takes_the_offset_and_keeps_the_tone():
    t = np.arange(3 * SR) / SR
    tone = 0.3 * np.sin(2 * np.pi * 1000 * t)
    y = remove_dc(np.stack([tone + 0.17, tone - 0.05]).astype(np.float32), SR)
    assert y.shape == (2, 3 * SR) and y.dtype == np.float32
    local_means = y.reshape(2, -1, SR // 10).mean(axis=2)  # every 0.1 s, the ends included
    assert np.abs(local_means).max() < 1e-3
    level_db = 20 * np.log10(np.sqrt(np.mean(y**2, axis=1)) / np.sqrt(np.mean(tone**2)))
    assert np.abs(level_db).max() < 0.1


def test_remove_dc_in_chunks_is_the_same_filter(monkeypatch):
    from tunesmith.audio import finishing

    x = music(3.0) + 0.17
    whole = remove_dc(x, SR)
    monkeypatch.setattr(finishing, "DC_CHUNK", 10007)
    np.testing.assert_allclose(remove_dc(x, SR), whole, atol=1e-6)


def test_remove_dc_keeps_a_loop_seamless():
    t = np.arange(2 * SR) / SR  # 2 s of a 2 Hz drift plus a tone: whole periods, so it loops
    loop = (0.2 * np.sin(2 * np.pi * 2 * t) + 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1)[None].astype(np.float32)
    y = remove_dc(loop, SR, periodic=True)
    steps = np.abs(np.diff(np.concatenate([y, y], axis=1)[0]))
    assert steps[2 * SR - 1] <= steps.max() * 1.01  # the seam jumps no more than the music does


def test_finishing_removes_dc_before_loudness():
    clip = Clip(music(4.0) + 0.17, SR, "", 0)
    done = clip.finish(loudness=-14.0)
    assert abs(float(done.audio.mean())) < 1e-3 and done.check.ok, done.check.summary()
    assert abs(integrated_loudness(done.audio, SR) + 14) < 0.5 and true_peak_dbtp(done.audio, SR) <= -1.0
