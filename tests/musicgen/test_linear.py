"""The linear stand-ins compute what their definitions say."""

import pytest
import torch
from torch import nn

from tunesmith.musicgen.linear import Int4Linear, Int8Linear, PackedLinear, cpu_packing_available


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
