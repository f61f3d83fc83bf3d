"""The three loop modes (eager, static, CUDA graph) compute the same thing."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from tunesmith import MusicGen
from tunesmith.musicgen.generate import generate_codes
from tunesmith.musicgen.sampling import SamplingParams

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


class _OffDeviceOps(TorchDispatchMode):
    """Notes every op that is handed a tensor off the meta device (a host tensor copied in, say)."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for t in tree_flatten((args, kwargs))[0]:
            if isinstance(t, torch.Tensor) and not t.is_meta:
                self.seen.add(f"{func} on a {t.device} tensor {tuple(t.shape)}")
        return func(*args, **kwargs)


@pytest.mark.parametrize("codebooks, channels, melody, quantize", [(4, 1, False, None), (8, 2, False, None),
                                                                   (4, 1, True, None), (4, 1, False, "int8")],
                         ids=["mono", "stereo", "melody", "int8"])
def test_captured_steps_stay_on_the_device_without_host_reads(codebooks, channels, melody, quantize):
    """The static and graph loops run whole on the meta device, which holds no values: a read of a
    value on the host (.item(), int(), a data-dependent shape), which would stall or break a CUDA
    graph, fails there, and any op handed a host tensor is noted. CI has no GPU; this checks what
    capture needs on any machine."""
    from tunesmith.musicgen.config import DecoderConfig
    from tunesmith.musicgen.linear import specialise_linears
    from tunesmith.musicgen.lm import MusicGenLM

    cfg = DecoderConfig(dim=32, n_layers=2, n_heads=2, ffn_dim=64, n_codebooks=codebooks, vocab_size=64,
                        audio_channels=channels, max_positions=128, text_dim=16, pad_token=64, melody=melody,
                        chroma_length=8)
    meta = torch.device("meta")
    with meta:
        lm = MusicGenLM(cfg).to(torch.bfloat16)  # a GPU's half-precision decoder, without values
    specialise_linears(lm, meta, quantize)
    states, mask = torch.empty(2, 5, 16, device=meta), torch.ones(2, 5, dtype=torch.long, device=meta)
    seeds = torch.tensor([1, 2], device=meta)
    chroma = torch.empty(2, 3, 12, device=meta) if melody else None
    prefix = torch.zeros(2, codebooks, 4, dtype=torch.long, device=meta)
    for mode in ("static", "graph"):
        for params in (SamplingParams(), SamplingParams(top_k=0, top_p=0.8), SamplingParams(temperature=0, cfg=1.0)):
            for start in (None, prefix):
                with _OffDeviceOps() as ops:
                    codes = generate_codes(lm, states, mask, 12, params, seeds, mode=mode, prefix=start,
                                           chroma=chroma)
                assert codes.shape == (2, codebooks, 12) and codes.is_meta
                assert not ops.seen, sorted(ops.seen)
