"""The linear stand-ins compute what their definitions say."""

import pytest
import torch
from torch import nn

from tunesmith.cpu_int8 import packed_int8
from tunesmith.musicgen import cpu_kernels, linear as linear_module
from tunesmith.musicgen.config import DecoderConfig
from tunesmith.musicgen.linear import (DynamicInt8Linear, Int4Linear, Int8Linear, PackedLinear, cpu_packing_available,
                                       specialise_linears)
from tunesmith.musicgen.lm import MusicGenLM

from .test_cpu_kernels import _decoder_logits, decoder_case

needs_fbgemm = pytest.mark.skipif(not any(e in torch.backends.quantized.supported_engines for e in ("x86", "fbgemm")),
                                  reason="this torch has no x86 quantized engine")


@pytest.fixture()
def linear():
    torch.manual_seed(0)
    layer = nn.Linear(256, 96, bias=True)
    return layer


def test_packed_linear_equals_linear(linear):
    if not cpu_packing_available(torch.float32):
        pytest.skip("no oneDNN")
    x = torch.randn(2, 3, 256)
    torch.testing.assert_close(PackedLinear(linear)(x), linear(x), atol=1e-5, rtol=1e-5)


def test_bfloat16_packing_is_offered_only_where_onednn_takes_it():
    """An AVX2-only CPU refuses bfloat16 packing with a RuntimeError: the probe says no instead, and the
    decoder keeps plain bfloat16 linears (where it says yes, the packed layer must run)."""
    linear = nn.Linear(64, 32).to(torch.bfloat16)
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    if cpu_packing_available(torch.bfloat16):
        torch.testing.assert_close(PackedLinear(linear)(x), linear(x), atol=2e-2, rtol=2e-2)
    else:
        with pytest.raises(RuntimeError):
            PackedLinear(linear)


def test_int8_is_per_channel_rounding(linear):
    x = torch.randn(2, 256)
    w = linear.weight.detach()
    scale = w.abs().amax(dim=1, keepdim=True) / 127
    dequantized = torch.round(w / scale) * scale
    torch.testing.assert_close(Int8Linear(linear, torch.float32)(x), x @ dequantized.t() + linear.bias,
                               atol=1e-4, rtol=1e-4)


def test_int4_is_groupwise_asymmetric_rounding(linear):
    x = torch.randn(2, 256)
    w = linear.weight.detach().view(96, 2, 128)
    low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    scale = (high - low) / 15
    dequantized = (torch.round((w - low) / scale).clamp(0, 15) * scale + low).view(96, 256)
    layer = Int4Linear(linear, torch.float32)
    assert layer.group == 128
    torch.testing.assert_close(layer(x), x @ dequantized.t() + linear.bias, atol=1e-4, rtol=1e-4)
    assert (layer(x) - linear(x)).abs().max() < 0.1 * linear(x).abs().max()  # and it is still the layer


def _dynamic_int8_reference(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """fbgemm's dynamic int8 product from its definition: W rounded per output row to [-127, 127]; x rounded
    once per call, asymmetric over [min(x, 0), max(x, 0)] to 7 bits (0..127, reduce_range); int32 sums."""
    w = linear.weight.detach().double()
    w_scale = w.abs().amax(dim=1, keepdim=True) / 127
    x = x.double()
    low, high = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    scale = (high - low) / 127
    zero = min(max(round(-low / scale), 0), 127)
    xq = (torch.round(x / scale) + zero).clamp(0, 127)
    y = ((xq - zero) * scale) @ (torch.round(w / w_scale) * w_scale).t()
    return (y if linear.bias is None else y + linear.bias.double()).float()


@needs_fbgemm
def test_dynamic_int8_is_per_channel_weights_and_per_call_activations(linear):
    x = torch.randn(2, 1, 256)  # a decode step: 2 rows, 1 position
    layer = DynamicInt8Linear(linear)
    expected = _dynamic_int8_reference(x, linear)
    torch.testing.assert_close(layer(x), expected, atol=1e-4 * expected.abs().max().item(), rtol=1e-4)
    prefill = torch.randn(2, 3, 256)  # several positions: the int8 weights widened, activations kept
    w = linear.weight.detach()
    scale = w.abs().amax(dim=1, keepdim=True) / 127
    torch.testing.assert_close(layer(prefill), prefill @ (torch.round(w / scale) * scale).t() + linear.bias,
                               atol=1e-4, rtol=1e-4)
    assert (layer(x) - linear(x)).abs().max() < 0.03 * linear(x).abs().max()  # and it is still the layer
    half = nn.Linear(256, 96).to(torch.bfloat16)
    half.load_state_dict(linear.state_dict())
    y = DynamicInt8Linear(half)(x.to(torch.bfloat16))  # a bfloat16 decoder's: out in bfloat16
    assert y.dtype == torch.bfloat16 and (y.float() - linear(x)).abs().max() < 0.05 * linear(x).abs().max()


@needs_fbgemm
def test_int8_goes_through_fbgemm_only_below_avx512(monkeypatch):
    """Where cpu_kernels' int8 kernel runs (AVX-512) the packed weight-only Int8Linear stays; below AVX-512
    fbgemm's DynamicInt8Linear; without the x86 engine, torch's weight-only int8 product."""
    lm = MusicGenLM(DecoderConfig(vocab_size=64, dim=64, n_heads=2, n_layers=1, ffn_dim=128, text_dim=32))

    class AVX512:
        int8, bf16 = True, False

    for kernels, below_avx512, expected in ((None, True, DynamicInt8Linear), (AVX512(), False, Int8Linear),
                                            (None, False, Int8Linear)):
        monkeypatch.setattr(cpu_kernels, "library", lambda: kernels)
        monkeypatch.setattr(linear_module, "packed_int8", lambda: below_avx512)
        make = linear_module.specialiser(lm, torch.device("cpu"), "int8")
        assert type(make(nn.Linear(64, 64, bias=False), "layers.0.fc1")) is expected
        head = make(nn.Linear(64, 64, bias=False), "heads")  # the heads stay in float below AVX-512
        float_head = PackedLinear if cpu_packing_available(torch.float32) else nn.Linear
        assert type(head) is (Int8Linear if expected is Int8Linear else float_head)
    assert packed_int8() == ("AVX512" not in torch.backends.cpu.get_cpu_capability())


@needs_fbgemm
@torch.inference_mode()
def test_decoder_through_fbgemm_int8_stays_close_to_float32(monkeypatch):
    """The whole decoder with its step linears in fbgemm's int8 (activations rounded too; the heads in float32)
    stays within the bound the packed weight-only int8 decoder is held to (tests/musicgen/test_cpu_kernels.py)."""
    monkeypatch.setattr(cpu_kernels, "library", lambda: None)  # as on a CPU below AVX-512
    monkeypatch.setattr(linear_module, "packed_int8", lambda: True)
    cfg, reference, codes, text, mask, expected = decoder_case()
    lm = MusicGenLM(cfg)
    lm.load_state_dict(reference.state_dict())
    lm.eval()
    specialise_linears(lm, torch.device("cpu"), "int8")
    assert all(isinstance(m, DynamicInt8Linear) for m in (lm.layers[0].fc1, lm.layers[1].cross.q))
    assert isinstance(lm.heads, PackedLinear if cpu_packing_available(torch.float32) else nn.Linear)
    got = _decoder_logits(lm, codes, text, mask)
    drift = (got - expected).abs().max() / expected.abs().max()
    assert 0 < drift < 0.015, drift
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.9  # greedy codes mostly the same
