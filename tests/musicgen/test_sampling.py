
import torch

from tunesmith.musicgen.sampling import (SamplingParams, guidance_mix, sample, top_k_filter, top_p_filter,
                                       uniform_noise)


def test_guidance_mix_formula():
    cond, uncond = torch.randn(2, 4, 10), torch.randn(2, 4, 10)
    mixed = guidance_mix(torch.cat([cond, uncond]), 3.0)
    torch.testing.assert_close(mixed, uncond + 3.0 * (cond - uncond))


def test_top_k_keeps_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = top_k_filter(logits, 2)
    assert torch.isfinite(kept).tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = torch.isfinite(top_p_filter(probs.log(), 0.75)).tolist()
    assert kept == [[True, True, False, False]]  # 0.5 < 0.75 <= 0.8
    assert torch.isfinite(top_p_filter(probs.log(), 0.1)).sum() == 1  # the top token always stays
    assert torch.isfinite(top_p_filter(probs.log(), 1.0)).all()


def test_greedy_is_argmax():
    logits = torch.randn(3, 4, 50)
    out = sample(logits, SamplingParams(temperature=0), torch.arange(3), torch.tensor(0))
    assert torch.equal(out, logits.argmax(-1))


def test_noise_is_uniform_and_keyed_by_seed_and_step():
    seeds = torch.tensor([1, 2, 1])
    a = uniform_noise(seeds, torch.tensor(7), (4, 2048))
    b = uniform_noise(seeds, torch.tensor(8), (4, 2048))
    assert torch.equal(a[0], a[2]) and not torch.equal(a[0], a[1]) and not torch.equal(a, b)
    assert 0 < a.min() and a.max() < 1
    assert abs(a.mean().item() - 0.5) < 0.01 and abs(a.var().item() - 1 / 12) < 0.005


def test_sampling_follows_the_distribution():
    probs = torch.tensor([0.6, 0.3, 0.1, 0.0])
    logits = probs.clamp_min(1e-12).log().expand(4000, 1, 4)
    draws = sample(logits, SamplingParams(temperature=1.0, top_k=0), torch.arange(4000), torch.tensor(3))
    freq = torch.bincount(draws.flatten(), minlength=4).float() / 4000
    assert torch.allclose(freq, probs, atol=0.03)
    # top-k 1 leaves only the most likely token
    assert (sample(logits, SamplingParams(top_k=1), torch.arange(4000), torch.tensor(3)) == 0).all()
