"""The ping-pong sampler against stable-audio-tools' sample_rf + sample_flow_pingpong, written out here."""

from __future__ import annotations

import math

import pytest
import torch

from tunesmith.errors import InvalidParameter
from tunesmith.stable_audio.pingpong import init_latents, pingpong_sigmas, pingpong_step


def reference_sigmas(steps, sigma_max):
    """sample_rf: logSNR evenly spaced from that of sigma_max (or -6) to 2, t = sigmoid(-logSNR), ends pinned."""
    logsnr_max = math.log(((1 - sigma_max) / sigma_max) + 1e-6) if sigma_max < 1 else -6
    t = torch.sigmoid(-torch.linspace(logsnr_max, 2, steps + 1))
    t[0] = sigma_max
    t[-1] = 0
    return t


def reference_sample(model, init, noise, steps, sigma_max, gen):
    """sample_rf's init-audio mix, then sample_flow_pingpong with torch.randn_like for the fresh noise."""
    x = noise if init is None else init * (1 - sigma_max) + noise * sigma_max
    t = reference_sigmas(steps, sigma_max)
    ts = x.new_ones([x.shape[0]])
    for i in range(len(t) - 1):
        denoised = x - t[i] * model(x, t[i] * ts)
        x = (1 - t[i + 1]) * denoised + t[i + 1] * torch.randn(x.shape, generator=gen)
    return x


def ours_sample(model, init, noise, steps, strength, gen):
    t = pingpong_sigmas(steps, strength)
    x = init_latents(init, noise, strength)
    for i in range(steps):
        v = model(x, t[i].expand(x.shape[0]))
        x = pingpong_step(x, v, t[i], t[i + 1], torch.randn(x.shape, generator=gen))
    return x


def fake_model(x, t):  # any smooth function of x and t stands in for the DiT
    return torch.tanh(x) * (1 + t[:, None, None]) - 0.3 * x


@pytest.mark.parametrize("steps", [1, 8, 20])
def test_sigmas_from_noise(steps):
    t = pingpong_sigmas(steps)
    assert t.shape == (steps + 1,) and t.dtype == torch.float32
    assert t[0] == 1 and t[-1] == 0
    assert torch.all(t[1:] < t[:-1])  # strictly decreasing
    interior = torch.sigmoid(-torch.linspace(-6, 2, steps + 1))[1:-1]
    assert torch.equal(t[1:-1], interior)


@pytest.mark.parametrize("start", [0.9, 0.5, 0.2])
def test_sigmas_from_init_audio(start):
    t = pingpong_sigmas(8, start)
    assert t[0] == pytest.approx(start) and t[-1] == 0
    assert torch.all(t[1:] < t[:-1])  # decreasing while start is noisier than sigmoid(-2) = 0.12
    assert torch.equal(t, reference_sigmas(8, start))


def test_sigmas_below_the_last_level_follow_stable_audio_tools():
    """A start quieter than sigmoid(-2) makes stable-audio-tools' schedule rise before its last jump to 0."""
    t = pingpong_sigmas(4, 0.05)
    assert torch.equal(t, reference_sigmas(4, 0.05))
    assert t[1] > t[0] and t[-1] == 0


@pytest.mark.parametrize("steps, start", [(0, 1.0), (8, -0.1), (8, 1.5)])
def test_sigmas_refuse_bad_values(steps, start):
    with pytest.raises(InvalidParameter):
        pingpong_sigmas(steps, start)


@pytest.mark.parametrize("strength, with_init", [(1.0, False), (1.0, True), (0.7, True), (0.3, True)])
def test_sampler_equals_stable_audio_tools(strength, with_init):
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(2, 4, 16, generator=gen)
    init = torch.randn(2, 4, 16, generator=gen) if with_init else None
    ours = ours_sample(fake_model, init, noise, 8, strength, torch.Generator().manual_seed(4))
    theirs = reference_sample(fake_model, init, noise, 8, strength, torch.Generator().manual_seed(4))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_exact_velocity_lands_on_the_target():
    """With the true velocity of a fixed target, every clean estimate is the target, so the result is too."""
    target = torch.randn(1, 4, 16)

    def model(x, t):  # x = (1 - t) * target + t * noise, so v = noise - target = (x - target) / t
        return (x - target) / t[:, None, None]

    out = ours_sample(model, None, torch.randn(1, 4, 16), 8, 1.0, torch.Generator().manual_seed(5))
    torch.testing.assert_close(out, target, rtol=0, atol=1e-5)


def test_strength_zero_returns_the_init_latents():
    init, noise = torch.randn(1, 4, 16), torch.randn(1, 4, 16)
    assert torch.equal(init_latents(init, noise, 0.0), init)
    assert torch.equal(init_latents(None, noise, 0.3), noise)
    assert torch.equal(pingpong_sigmas(8, 0.0), torch.zeros(9))
    out = ours_sample(fake_model, init, noise, 8, 0.0, torch.Generator().manual_seed(6))
    assert torch.equal(out, init)
