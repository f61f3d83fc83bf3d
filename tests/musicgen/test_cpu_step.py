"""The whole decode step in one kernel call gives what the layers give, and steps aside where it does not apply."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tunesmith.musicgen import cpu_kernels, cpu_step
from tunesmith.musicgen.config import DecoderConfig
from tunesmith.musicgen.linear import specialise_linears
from tunesmith.musicgen.lm import MusicGenLM

CFG = dict(vocab_size=64, dim=128, n_heads=2, n_layers=2, ffn_dim=256, n_codebooks=4, text_dim=32, text_proj=True,
           max_positions=256)


@pytest.fixture()
def kernels():
    found = cpu_kernels.library()
    if found is None or not found.step:
        pytest.skip("cpu_kernels' whole step unavailable here (no AVX512-BF16 or AVX2, or no compiler)")
    return found


def step_form(kernels) -> dict:
    """_model's arguments for a model the whole step takes here: bfloat16 weights on AVX512-BF16, a float32
    model with int8 weights on AVX2 (its products are int8 only)."""
    return dict(quantize=None) if kernels.bf16 else dict(quantize="int8", dtype=torch.float32)


@pytest.fixture()
def layers_only(monkeypatch):
    """Run the decoder's layers (torch modules, per-operation kernels) instead of the whole-step call."""
    def use(on: bool):
        monkeypatch.setattr(cpu_step, "build", (lambda lm, rows: None) if on else BUILD)
    return use


BUILD = cpu_step.build


def _model(quantize, melody=False, dtype=torch.bfloat16, seed=0, style=False) -> MusicGenLM:
    torch.manual_seed(seed)
    lm = MusicGenLM(DecoderConfig(**CFG, melody=melody, chroma_length=6, style=style))
    nn.init.normal_(lm.embed, std=0.5)
    lm.to(dtype).eval()
    specialise_linears(lm, torch.device("cpu"), quantize)
    return lm


def _run(lm, codes, text, mask, chroma=None, style=None):
    """Condition, prefill the first column (with a melody or style model's prefix), then one column at a
    time through the cache -> logits [B, K, T, V] float32."""
    lm.set_condition(text, mask, chroma, style)
    lm.setup_cache(batch=codes.shape[0], max_len=codes.shape[2])
    out = [lm(codes[:, :, :1], torch.tensor([0]), kv_len=1, with_prefix=lm.cfg.prefix)]
    out += [lm(codes[:, :, t:t + 1], torch.tensor([t]), kv_len=t + 1) for t in range(1, codes.shape[2])]
    return torch.cat(out, dim=2).float()


def _inputs(rows=2, steps=24):
    torch.manual_seed(1)
    codes = torch.randint(0, 64, (rows, 4, steps))
    text = torch.randn(rows, 5, 32)
    mask = torch.ones(rows, 5, dtype=torch.long)
    mask[0, 3:] = 0  # padded text: the cross-attention bias masks it
    return codes, text, mask


@pytest.mark.parametrize("quantize", [None, "int8"])
@torch.inference_mode()
def test_whole_step_matches_the_layers(kernels, layers_only, quantize):
    if quantize is None and not kernels.bf16:
        pytest.skip("bfloat16 weights in the whole step need AVX512-BF16")
    codes, text, mask = _inputs()
    layers_only(True)
    lm = _model(quantize)
    expected = _run(lm, codes, text, mask)
    expected_k = [layer.attn.cache.k.float().clone() for layer in lm.layers]
    layers_only(False)
    lm = _model(quantize)
    got = _run(lm, codes, text, mask)
    assert isinstance(lm.whole_step[1], cpu_step.CPUStep)  # it ran
    # Both round to bfloat16 in places (the layers more often): within a percent, same choices.
    assert (got - expected).abs().max() < 0.01 * expected.abs().max()
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.95
    for layer, k in zip(lm.layers, expected_k):  # the keys were written to the same cache positions
        assert (layer.attn.cache.k.float() - k).abs().max() < 0.02 * k.abs().max()


@pytest.mark.parametrize("quantize", ["int8", "int4"])
@torch.inference_mode()
def test_avx2_whole_step_matches_the_layers(avx2_kernels, layers_only, quantize):
    """The AVX2 build's whole step: int8 step linears, or int4 with int8 heads, gives what the layers give."""
    codes, text, mask = _inputs()
    layers_only(True)
    expected = _run(_model(quantize, dtype=torch.float32), codes, text, mask)
    layers_only(False)
    lm = _model(quantize, dtype=torch.float32)
    got = _run(lm, codes, text, mask)
    assert isinstance(lm.whole_step[1], cpu_step.CPUStep)
    assert (got - expected).abs().max() < 0.01 * expected.abs().max()
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.95


@torch.inference_mode()
def test_whole_step_matches_float32_without_cross_attention(kernels, layers_only):
    """A melody model: no cross-attention, a condition prefix in the cache ahead of the codes."""
    codes, text, mask = _inputs()
    chroma = F.one_hot(torch.randint(0, 12, (2, 6)), 12).float()
    expected = _run(_model(None, melody=True, dtype=torch.float32), codes, text, mask, chroma)
    lm = _model(melody=True, **step_form(kernels))
    got = _run(lm, codes, text, mask, chroma)
    assert isinstance(lm.whole_step[1], cpu_step.CPUStep)
    assert (got - expected).abs().max() < 0.015 * expected.abs().max()


@torch.inference_mode()
def test_whole_step_takes_the_three_rows_of_a_style_prompt(kernels, layers_only):
    """MusicGen-Style's double guidance: text+style, style only, neither -- three rows, a style prefix."""
    codes, text, mask = _inputs(rows=3)
    style = torch.randn(1, 4, CFG["dim"]).expand(2, -1, -1)
    style = torch.cat([style, torch.zeros(1, 4, CFG["dim"])])  # the third row's null style
    mask[1:] = 0  # style-only and unconditional rows: no text
    expected = _run(_model(None, style=True, dtype=torch.float32), codes, text, mask, style=style)
    lm = _model(style=True, **step_form(kernels))
    got = _run(lm, codes, text, mask, style=style)
    assert isinstance(lm.whole_step[1], cpu_step.CPUStep) and lm.whole_step[1].rows == 3
    assert (got - expected).abs().max() < 0.015 * expected.abs().max()


@torch.inference_mode()
def test_whole_step_steps_aside(kernels, layers_only):
    codes, text, mask = _inputs(rows=2, steps=6)
    assert cpu_step.build(_model(None, dtype=torch.float32), 2) is None  # float32 cache
    lm = _model(None)
    lm.set_condition(*_inputs(rows=17)[1:])
    lm.setup_cache(batch=17, max_len=4)
    assert cpu_step.build(lm, 17) is None  # more rows than the kernels take

    layers_only(True)
    expected = _run(_model("int8"), codes, text, mask)
    layers_only(False)
    lm = _model("int8")
    threads = torch.get_num_threads()
    lm.set_condition(text, mask)
    lm.setup_cache(batch=2, max_len=6)
    out = [lm(codes[:, :, :1], torch.tensor([0]), kv_len=1)]  # builds the step for this thread count
    torch.set_num_threads(threads + 1)
    try:  # another thread count mid-piece: the workspace does not fit, the layers run instead
        out += [lm(codes[:, :, t:t + 1], torch.tensor([t]), kv_len=t + 1) for t in range(1, 6)]
    finally:
        torch.set_num_threads(threads)
    got = torch.cat(out, dim=2).float()
    assert lm.whole_step[1].threads == threads
    assert (got - expected).abs().max() < 0.01 * expected.abs().max()


def test_gelu_matches_torch(kernels):
    x = torch.linspace(-12, 12, 4096)
    y = torch.empty_like(x)
    kernels.lib.ts_gelu(x.data_ptr(), y.data_ptr(), x.numel())
    assert (y.double() - F.gelu(x.double())).abs().max() < 1e-6


def test_long_pieces_and_continuations_through_the_whole_step(kernels, mono_ckpt, monkeypatch):
    """Windows, their context prefills and an audio prompt through the public API, on a decoder sized for
    the kernels (the tiny checkpoint's head dim of 8 is below what they take): the step is rebuilt for
    each window's condition and cache, and a seed still gives the same audio."""
    from dataclasses import replace

    import numpy as np

    from tunesmith import MusicGen

    mg = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", quantize="int8")
    cfg = replace(mg._model.lm.cfg, dim=64, n_heads=2, ffn_dim=128)
    torch.manual_seed(0)
    lm = MusicGenLM(cfg)
    nn.init.normal_(lm.embed, std=0.5)
    lm.to(torch.bfloat16).eval()
    specialise_linears(lm, torch.device("cpu"), "int8")
    mg._model.lm = lm
    mg._window_seconds = 1.0
    built = []
    monkeypatch.setattr(cpu_step, "build", lambda lm, rows: built.append(BUILD(lm, rows)) or built[-1])

    a, = mg.generate("slow jazz", duration=3.0, seed=5, context=0.4)
    windows = len(built)
    b, = mg.generate("slow jazz", duration=3.0, seed=5, context=0.4)
    assert windows >= 3 and all(isinstance(step, cpu_step.CPUStep) for step in built)
    assert np.array_equal(a.audio, b.audio) and a.check.ok
    assert a.audio.shape[-1] == 3 * a.sample_rate
    first_second = (a.audio[:, : a.sample_rate], a.sample_rate)
    more, = mg.generate("slow jazz", duration=1.5, seed=6, context=0.4, audio_prompt=first_second)
    assert more.audio.shape[-1] == round(1.5 * more.sample_rate) and more.check.ok
