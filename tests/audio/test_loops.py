import numpy as np

from tunesmith.audio.loops import loop_overhang, make_loop

from .test_finishing import SR, music


def _seam_report(loop):
    twice = np.concatenate([loop, loop], axis=1).mean(axis=0)
    n = loop.shape[1]
    jumps = np.abs(np.diff(twice))
    window = int(0.05 * SR)

    def rms(a):
        return np.sqrt(np.mean(a**2))

    levels = np.array([rms(twice[i:i + window]) for i in range(0, twice.size - window, window // 2)])
    seam_level = rms(twice[n - window // 2:n + window // 2])
    return jumps[n - 1], jumps, seam_level, levels


def test_loop_is_exact_and_its_seam_is_as_smooth_as_the_rest():
    duration = 4.0
    material = music(duration + loop_overhang(duration) + 0.3, seed=3)
    loop = make_loop(material, SR, duration)
    assert loop.shape == (2, int(duration * SR))
    seam_jump, jumps, seam_level, levels = _seam_report(loop)
    assert seam_jump <= np.percentile(jumps, 99.9)  # no click
    assert levels.min() <= seam_level <= levels.max()  # no dip or bump beyond the music's own range
    # the head's crossfade region keeps the level (equal power for the material's correlation)
    head = loop[:, : int(0.5 * SR)]
    assert np.sqrt(np.mean(head**2)) > 0.7 * np.sqrt(np.mean(loop**2))


def test_a_naive_cut_would_click():
    """Control: the same material cut to length without make_loop clicks at the seam."""
    duration = 3.77  # not a whole number of the chord's periods
    material = music(duration + loop_overhang(duration), seed=4)
    naive_jump, naive_jumps, _, _ = _seam_report(material[:, : int(duration * SR)])
    assert naive_jump > np.percentile(naive_jumps, 99.9)
    loop_jump, loop_jumps, _, _ = _seam_report(make_loop(material, SR, duration))
    assert loop_jump <= np.percentile(loop_jumps, 99.9)
