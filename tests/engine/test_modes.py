"""The three loop modes (eager, static, CUDA graph) compute the same thing."""

import pytest
import torch

from tunesmith import MusicGen
from tunesmith.engine.generate import generate_codes
from tunesmith.engine.sampling import SamplingParams

PROMPTS = ["calm lofi piano", "deep house with a hypnotic bassline and bossa nova guitar"]


def _codes(mg, mode, params, seeds=(3, 4), prompts=PROMPTS, frames=30, prefix=None):
    model = mg._model
    states, mask = model.text.encode(prompts)
    seeds = torch.tensor(seeds[: len(prompts)], device=mg.device)
    return generate_codes(model.lm, states, mask, frames, params, seeds, mode=mode, prefix=prefix)


@pytest.mark.parametrize("which", ["mono_ckpt", "stereo_ckpt"])
@pytest.mark.parametrize("params", [SamplingParams(), SamplingParams(temperature=0), SamplingParams(cfg=1.0),
                                    SamplingParams(top_k=0, top_p=0.8, temperature=0.7)])
def test_static_step_matches_eager_loop(which, params, request):
    mg = MusicGen.from_pretrained(request.getfixturevalue(which)[0], device="cpu", dtype="float32")
    eager = _codes(mg, "eager", params)
    static = _codes(mg, "static", params)
    assert torch.equal(eager, static)


@pytest.mark.parametrize("which", ["mono_ckpt", "stereo_ckpt"])
def test_graph_bookkeeping_matches_eager_on_cpu(which, request):
    """Graph mode off CUDA replays the step eagerly: buffers, positions, text buckets, reuse across calls."""
    mg = MusicGen.from_pretrained(request.getfixturevalue(which)[0], device="cpu", dtype="float32")
    params = SamplingParams()
    eager = _codes(mg, "eager", params)
    assert torch.equal(_codes(mg, "graph", params), eager)
    other = _codes(mg, "graph", params, prompts=["ambient", "rock drums"])
    assert len(mg._model.lm.step_graphs) == 1 and not torch.equal(other, eager)
    assert torch.equal(_codes(mg, "graph", params), eager)
    prefix = torch.randint(0, 64, (2, mg._model.config.decoder.n_codebooks, 8))  # a continuation
    continued = _codes(mg, "eager", params, prefix=prefix)
    assert torch.equal(continued[:, :, :8], prefix)
    assert torch.equal(_codes(mg, "graph", params, prefix=prefix), continued)
    assert torch.equal(_codes(mg, "static", params, prefix=prefix), continued)


def test_reused_cache_gives_fresh_results(mono_ckpt):
    mg = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32")
    first = _codes(mg, "static", SamplingParams(), seeds=(1, 2))
    _codes(mg, "static", SamplingParams(), seeds=(7, 8))  # leaves stale keys/values behind
    again = _codes(mg, "static", SamplingParams(), seeds=(1, 2))
    assert torch.equal(first, again)


@pytest.mark.gpu
@pytest.mark.parametrize("which", ["mono_ckpt", "stereo_ckpt"])
def test_cuda_graph_matches_static_and_is_reused(which, request):
    mg = MusicGen.from_pretrained(request.getfixturevalue(which)[0], device="cuda", dtype="float32")
    params = SamplingParams()
    static = _codes(mg, "static", params)
    graph = _codes(mg, "graph", params)
    assert torch.equal(static.cpu(), graph.cpu())
    other = _codes(mg, "graph", params, prompts=["ambient", "rock drums"])  # same text bucket: same graph
    assert len(mg._model.lm.step_graphs) == 1 and not torch.equal(other, graph)
    assert torch.equal(_codes(mg, "graph", params).cpu(), graph.cpu())


@pytest.mark.gpu
def test_cuda_greedy_matches_cpu(mono_ckpt):
    cpu = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32")
    gpu = MusicGen.from_pretrained(mono_ckpt[0], device="cuda", dtype="float32")
    greedy = SamplingParams(temperature=0)
    assert torch.equal(_codes(cpu, "eager", greedy), _codes(gpu, "auto", greedy).cpu())
    clip, = gpu.generate("calm lofi piano", duration=0.5, seed=1)
    assert clip.audio.shape == (1, 16000) and clip.params["device"] == "cuda"
