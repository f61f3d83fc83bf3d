"""The shared CPU kernels' DiT pieces that only ACE-Step uses: attention over a sliding window and the
per-head RMSNorm + rotary pass, against float64 torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunesmith.diffusion import ops


@pytest.fixture(params=["kernel", "torch"])
def impl(request, monkeypatch):
    """Both implementations: the compiled kernels (where they build) and torch's ops."""
    if request.param == "torch":
        monkeypatch.setattr(ops, "kernels", lambda: None)
    elif ops.kernels() is None or not ops.kernels().attention:
        pytest.skip("no C compiler or no AVX512-BF16 here: the attention kernel is not built")
    return request.param


@pytest.mark.parametrize("B, H, H_kv, T, D, window", [(2, 4, 2, 300, 16, 5), (1, 2, 1, 130, 64, 64),
                                                       (1, 2, 2, 70, 32, 0), (2, 2, 1, 9, 16, 128)])
@torch.inference_mode()
def test_windowed_attention_is_the_banded_softmax(impl, B, H, H_kv, T, D, window):
    """Query t sees keys |t - j| <= window only (ACE-Step's sliding layers): the kernel skips the
    blocks of 64 keys outside a group's window (T 300, window 5), and agrees with float64 as closely
    as torch's own bfloat16 attention does."""
    torch.manual_seed(0)
    q = (torch.randn(B, T, 3, H, D) * 2).bfloat16()[:, :, 0].transpose(1, 2)  # (B, H, T, D), strided
    k, v = (torch.randn(B, H_kv, T, D) * 2).bfloat16(), torch.randn(B, H_kv, T, D).bfloat16()
    k_all, v_all = k.repeat_interleave(H // H_kv, 1), v.repeat_interleave(H // H_kv, 1)
    band = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).abs() <= window
    exact = F.scaled_dot_product_attention(q.double(), k_all.double(), v_all.double(), attn_mask=band)
    exact = exact.transpose(1, 2).reshape(B, T, H * D)
    torch_bf16 = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=band).transpose(1, 2).reshape(B, T, H * D)
    out = ops.attention(q, k, v, window)
    assert out.shape == (B, T, H * D) and out.dtype == torch.bfloat16
    error, torch_error = (exact - out.double()).pow(2).mean(), (exact - torch_bf16.double()).pow(2).mean()
    assert error <= 1.3 * torch_error + 1e-12 * exact.pow(2).mean()
    whole = ops.attention(q, k, v)  # no window: another function wherever the band cuts
    assert window >= T - 1 or (whole.double() - exact).abs().max() > 0.1


@torch.inference_mode()
def test_rms_norm_then_rotary_in_one_pass():
    """ts_norm_rotate with an RMSNorm (ACE-Step's q/k norm): x / sqrt(mean(x^2) + eps) * weight, then
    rotate-half rotary, float32 inside, one bfloat16 rounding."""
    if ops.kernels() is None:
        pytest.skip("no C compiler here: the kernels are not built")
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    torch.manual_seed(0)
    B, H, S, D = 2, 3, 11, 32
    x = (torch.randn(B, S, H, D) * 3).bfloat16().transpose(1, 2)  # (B, H, S, D), strided as a projection's view
    weight, eps = torch.rand(D) + 0.5, 1e-6
    cos, sin = get_1d_rotary_pos_embed(D, torch.arange(S, dtype=torch.float32), theta=1e4, use_real=True,
                                       repeat_interleave_real=False)
    y = x.double() * torch.rsqrt(x.double().pow(2).mean(-1, keepdim=True) + eps) * weight.double()
    real, imag = y.unflatten(-1, (2, -1)).unbind(-2)
    expected = y * cos.double() + torch.cat([-imag, real], -1) * sin.double()
    assert ops.norm_rotate(x, "rms", weight, None, eps, (cos, sin))
    assert ((x.double() - expected).abs() <= expected.abs() * 2 ** -8 + 1e-6).all()
    assert not ops.norm_rotate(x.float(), "rms", weight, None, eps, None)  # float32: the caller's torch path


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.inference_mode()
def test_adaln_passes_equal_torch(impl, dtype):
    """ACE-Step's RMSNorm * (1 + scale) + shift and x += y * gate, rows of each batch element with
    their own modulation (views of a [B, 6, W] table, as the DiT chunks it)."""
    torch.manual_seed(0)
    B, S, W = 2, 37, 96
    x, weight = torch.randn(B, S, W) * 3, torch.rand(W) + 0.5
    table = torch.randn(B, 6, W) * 0.3
    shift, scale, gate = table.chunk(6, dim=1)[:3]  # [B, 1, W], rows 6 W apart
    expected = (F.rms_norm(x.double(), (W,), weight.double(), 1e-6) * (1 + scale.double()) + shift.double())
    out = ops.modulated_rms(x, weight, 1e-6, scale, shift, dtype)
    assert out.dtype == dtype and out.shape == x.shape
    tolerance = 1e-5 if dtype == torch.float32 else 2 ** -8
    assert torch.allclose(out.double(), expected, rtol=tolerance, atol=tolerance)
    plain = ops.modulated_rms(x, weight, 1e-6, dtype=dtype)  # no modulation: the cross-attention's norm
    assert torch.allclose(plain.double(), F.rms_norm(x.double(), (W,), weight.double(), 1e-6), rtol=tolerance, atol=1e-5)

    y = torch.randn(B, S, W).to(dtype)
    total = x.clone()
    assert ops.gated_add(total, y, gate) is total
    assert torch.allclose(total, x + y.float() * gate, rtol=1e-6, atol=1e-6)
    assert torch.allclose(ops.gated_add(x.clone(), y), x + y.float(), rtol=1e-6, atol=1e-6)
