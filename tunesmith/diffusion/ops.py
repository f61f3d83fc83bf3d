"""CPU pieces the diffusion families share (Stable Audio, ACE-Step): the C kernels of kernels.c and
the products around them.

    kernels()       the compiled kernels.c (None without a compiler: torch's ops do the same work)
    snake, interleave, add_rows
                    one-pass helpers of the tiled Oobleck decoder (oobleck.py)
    norm_rotate     a per-head LayerNorm or RMSNorm, then rotary, on bfloat16 q or k, in place
    modulated_rms, gated_add
                    AdaLN's passes over a float32 residual stream: RMSNorm * (1 + scale) + shift,
                    and x += y * gate, one pass each
    attention       softmax(q k^T / sqrt(D)) v in bfloat16 with float32 scores (GQA, an optional
                    sliding window)
    Linear          x W^T (+ b) in bfloat16 (oneDNN, float32 sums) or dynamic int8
    int8_or         a DiT layer's product: fbgemm's int8 below AVX-512 (cpu_int8.PackedInt8Linear), else Linear
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import shutil
import subprocess
from pathlib import Path

import torch
import torch.nn.functional as F

from ..cpu_int8 import PackedInt8Linear, packed_int8

log = logging.getLogger("tunesmith")

SOURCE = Path(__file__).with_name("kernels.c")

_KERNEL_DTYPES = (torch.float32, torch.bfloat16)


@functools.cache
def kernels() -> ctypes.CDLL | None:
    """The compiled kernels of kernels.c, or None (torch's ops are used: the same values up to
    rounding, slower). Built once per machine (tunesmith/native.py); off with TUNESMITH_CPU_KERNELS=0.
    `.attention` says whether the attention kernel is in (AVX512-BF16)."""
    if os.environ.get("TUNESMITH_CPU_KERNELS", "1") == "0":
        return None
    from ..native import build, why_not

    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        log.warning("no C compiler found: the diffusion models' CPU kernels are off, torch ops are used (slower)")
        return None
    try:
        lib = ctypes.CDLL(str(build(compiler, SOURCE)))
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("the diffusion models' CPU kernels are off (%s): torch ops are used (slower)",
                    why_not(compiler, err))
        return None
    p, i, lg, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_float
    lib.ts_snake.argtypes = [p, i, lg, p, i, lg, p, p, lg, i, lg, i]
    lib.ts_add_rows.argtypes = [p, lg, p, i, lg, p, lg, i, lg, i]
    lib.ts_interleave.argtypes = [p, lg, p, i, i, i, i, lg, i]
    for fn in (lib.ts_snake, lib.ts_add_rows, lib.ts_interleave):
        fn.restype = None
    lib.ts_quantize_taps.argtypes = [p, i, lg, i, i, i, lg, f, p, i]
    lib.ts_dequantize_rows.argtypes = [p, lg, lg, p, p, p, p, p, i]
    lib.ts_quantize_taps.restype = lib.ts_dequantize_rows.restype = f
    lib.ts_add_dequantized.argtypes = [p, lg, p, p, p, lg, lg, i]
    lib.ts_add_dequantized.restype = None
    lib.ts_quantize_rows.argtypes = [p, i, lg, lg, i, p, p, i]
    lib.ts_dequantize.argtypes = [p, lg, i, p, p, p, p, i]
    lib.ts_norm_rotate.argtypes = [p, lg, lg, lg, i, i, i, i, i, p, p, f, p, p, i, i]
    lib.ts_modulated_rms.argtypes = [p, lg, i, lg, p, f, p, p, lg, p, i, i]
    lib.ts_gated_add.argtypes = [p, p, i, lg, i, lg, p, lg, i]
    for fn in (lib.ts_quantize_rows, lib.ts_dequantize, lib.ts_norm_rotate, lib.ts_modulated_rms, lib.ts_gated_add):
        fn.restype = None
    lib.attention = bool(lib.ts_has_attention())
    if lib.attention:
        lib.ts_attention_bf16.argtypes = [p, lg, lg, lg, p, lg, lg, lg, p, lg, lg, lg, p, i, i, i, i, i, i, f, i, i]
    return lib


def snake(x: torch.Tensor, alpha: torch.Tensor, inv_beta: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = x + inv_beta * sin(alpha * x)^2, per channel: x [B, C, L] float32 or bfloat16 (a view
    whose rows are evenly spaced, as a slice along time of a contiguous tensor), alpha and inv_beta
    [C] float32 (Snake1d's exp(alpha) and 1 / (exp(beta) + 1e-9)), out [B, C, L] (contiguous rows,
    float32 or bfloat16). out may be x itself."""
    B, C, L = x.shape
    lib = kernels()
    rows_even = x.stride(2) == 1 and x.stride(0) == C * x.stride(1)
    out_even = out.stride(2) == 1 and out.stride(0) == C * out.stride(1)
    if lib is None or not (rows_even and out_even) or x.dtype not in _KERNEL_DTYPES or out.dtype not in _KERNEL_DTYPES:
        xf = x.float()
        return out.copy_(xf + inv_beta[:, None] * torch.sin(alpha[:, None] * xf).pow(2))
    lib.ts_snake(x.data_ptr(), int(x.dtype == torch.bfloat16), x.stride(1), out.data_ptr(),
                 int(out.dtype == torch.bfloat16), out.stride(1), alpha.data_ptr(), inv_beta.data_ptr(), B * C, C, L,
                 torch.get_num_threads())
    return out



def interleave(y: torch.Tensor, phases: torch.Tensor) -> torch.Tensor:
    """y[b, c, j, r] = phases[b, r, c, j]: y [B, C, F, s] float32 (rows evenly spaced, each row's
    F * s values contiguous), phases [B, s, C, F] contiguous, float32 or bfloat16."""
    B, C, Fr, s = y.shape
    lib = kernels()
    usable = y.dtype == torch.float32 and phases.dtype in _KERNEL_DTYPES and phases.is_contiguous() and \
        y.stride(3) == 1 and y.stride(2) == s and y.stride(0) == C * y.stride(1)
    if lib is None or not usable:
        return y.copy_(phases.permute(0, 2, 3, 1))
    lib.ts_interleave(y.data_ptr(), y.stride(1), phases.data_ptr(), int(phases.dtype == torch.bfloat16), B, s, C, Fr,
                      torch.get_num_threads())
    return y


def add_rows(x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x += y + bias[:, None] in place: x [B, C, L] float32 (a slice along time of a contiguous
    tensor), y [B, C, L] float32 or bfloat16 with contiguous rows, bias [C] float32 or None."""
    B, C, L = x.shape
    lib = kernels()
    rows_even = x.stride(2) == 1 and x.stride(0) == C * x.stride(1) and y.stride(2) == 1 and \
        y.stride(0) == C * y.stride(1)
    if lib is None or not rows_even or x.dtype != torch.float32 or y.dtype not in _KERNEL_DTYPES:
        x += y if bias is None else y + bias[:, None]
        return x
    lib.ts_add_rows(x.data_ptr(), x.stride(1), y.data_ptr(), int(y.dtype == torch.bfloat16), y.stride(1),
                    None if bias is None else bias.data_ptr(), B * C, C, L, torch.get_num_threads())
    return x


def quantize_taps(x: torch.Tensor, taps: int, dilation: int, length: int,
                  top: float | None = None) -> tuple[torch.Tensor, float]:
    """The int8 columns of a convolution over x [C, length + (taps - 1) * dilation] (float32 or
    bfloat16, contiguous rows): cols [taps * C, length], cols[k * C + c, t] = round(x[c, t + k *
    dilation] / s), and s = max |x| / 127 (one scale for the tile; `top`: max |x| when known)."""
    C = x.shape[0]
    width = length + (taps - 1) * dilation
    lib = kernels()
    if lib is None or x.dtype not in _KERNEL_DTYPES or x.stride(1) != 1:
        x = x[:, :width].float()
        scale = ((x.abs().max() if top is None else torch.tensor(top)) / 127).clamp_min(1e-12)  # float32, as in C
        q = torch.round(x * scale.reciprocal()).to(torch.int8)
        return torch.cat([q[:, k * dilation:k * dilation + length] for k in range(taps)]), scale.item()
    cols = torch.empty(taps * C, length, dtype=torch.int8)
    scale = lib.ts_quantize_taps(x.data_ptr(), int(x.dtype == torch.bfloat16), x.stride(0), C, taps, dilation, length,
                                 -1.0 if top is None else top, cols.data_ptr(), torch.get_num_threads())
    return cols, scale


def dequantize_rows(acc: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, snake_params: tuple | None,
                    out: torch.Tensor) -> float:
    """out [R, L] bfloat16 (contiguous) = Snake(acc * scale[:, None] + bias[:, None]) (without
    snake_params, no Snake): acc [R, L] int32, scale and bias [R] float32. Returns max |out|."""
    lib = kernels()
    if lib is None:
        v = acc.float() * scale[:, None] + (0 if bias is None else bias[:, None])
        snake(v[None], *snake_params, out=out[None]) if snake_params else out.copy_(v)
        return out.abs().max().item()
    alpha, inv_beta = snake_params or (None, None)
    return lib.ts_dequantize_rows(acc.data_ptr(), acc.shape[0], acc.shape[1], scale.data_ptr(),
                                  None if bias is None else bias.data_ptr(),
                                  None if alpha is None else alpha.data_ptr(),
                                  None if inv_beta is None else inv_beta.data_ptr(), out.data_ptr(),
                                  torch.get_num_threads())


def add_dequantized(x: torch.Tensor, acc: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x += acc * scale[:, None] + bias[:, None] in place: x [R, L] float32 (a slice along time of
    a contiguous tensor), acc [R, L] int32, scale and bias [R] float32."""
    lib = kernels()
    if lib is None or x.stride(1) != 1:
        x += acc.float() * scale[:, None] + (0 if bias is None else bias[:, None])
        return x
    lib.ts_add_dequantized(x.data_ptr(), x.stride(0), acc.data_ptr(), scale.data_ptr(),
                           None if bias is None else bias.data_ptr(), acc.shape[0], acc.shape[1],
                           torch.get_num_threads())
    return x


# ----------------------------------------------------------------------------------- DiT products


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v: q (B, H, Tq, D), k and v (B, H_kv, Tk, D), H a multiple of H_kv (head
    h reads key/value head h // (H / H_kv)) -> [B, Tq, H * D]. window: query t sees only the keys j
    with |t - j| <= window (a sliding-window layer). bfloat16 goes to kernels.c's kernel (about 3x
    torch's CPU flash attention at these sizes, the same rounding); the rest to torch's
    scaled_dot_product_attention (float32 stays float32)."""
    B, H, Tq, D = q.shape
    H_kv, Tk = k.shape[1], k.shape[2]
    lib = kernels()
    usable = (lib is not None and lib.attention and q.dtype == k.dtype == v.dtype == torch.bfloat16
              and q.stride(3) == k.stride(3) == v.stride(3) == 1 and D % 16 == 0 and D <= 128 and H % H_kv == 0)
    if usable:
        out = torch.empty(B, Tq, H, D, dtype=q.dtype)
        failed = lib.ts_attention_bf16(q.data_ptr(), *q.stride()[:3], k.data_ptr(), *k.stride()[:3], v.data_ptr(),
                                       *v.stride()[:3], out.data_ptr(), B, H, H_kv, Tq, Tk, D, D ** -0.5,
                                       -1 if window is None else window, torch.get_num_threads())
        if not failed:
            return out.view(B, Tq, H * D)
    mask = None if window is None else band(Tq, Tk, window)
    if H_kv != H:
        k, v = k.repeat_interleave(H // H_kv, dim=1), v.repeat_interleave(H // H_kv, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(B, Tq, H * D)


def band(Tq: int, Tk: int, window: int) -> torch.Tensor:
    """[Tq, Tk] bool, True where |t - j| <= window: the keys a sliding-window query sees."""
    return (torch.arange(Tq)[:, None] - torch.arange(Tk)[None, :]).abs() <= window


def norm_rotate(x: torch.Tensor, kind: str | None, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float, rotary: tuple | None) -> bool:
    """In place on bfloat16 q or k (B, heads, S, head_dim), the head_dim values contiguous: a per-head
    norm (kind "layer" or "rms", or None), then diffusers' rotary embedding (use_real, unbind dim
    -2) with rotary = (cos, sin) [S, rot] on the first rot values; float32 inside, one rounding.
    weight, bias: float32 [head_dim] or None. False (x untouched) where the kernel cannot run."""
    lib = kernels()
    B, H, S, D = x.shape
    if lib is None or x.dtype != torch.bfloat16 or x.stride(3) != 1 or D > 512:
        return False
    cos, sin = (None, None) if rotary is None else (t.float().contiguous() for t in rotary)
    lib.ts_norm_rotate(x.data_ptr(), *x.stride()[:3], B, H, S, D, {None: 0, "layer": 1, "rms": 2}[kind],
                       None if weight is None else weight.data_ptr(), None if bias is None else bias.data_ptr(),
                       eps, None if cos is None else cos.data_ptr(), None if sin is None else sin.data_ptr(),
                       0 if rotary is None else cos.shape[-1], torch.get_num_threads())
    return True


def _rows(x: torch.Tensor, mod: torch.Tensor | None) -> bool:
    """x [B, S, W] float32 contiguous, mod None or [B, 1, W] float32 with contiguous rows: the kernels' layout."""
    return (x.dtype == torch.float32 and x.is_contiguous() and x.dim() == 3 and
            (mod is None or (mod.dtype == torch.float32 and mod.shape == (x.shape[0], 1, x.shape[2])
                             and mod.stride(2) == 1)))


def modulated_rms(x: torch.Tensor, weight: torch.Tensor, eps: float, scale: torch.Tensor | None = None,
                  shift: torch.Tensor | None = None, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """RMSNorm(x) * weight, then * (1 + scale) + shift where given (AdaLN), in `dtype`: x [B, S, W]
    float32, weight [W] float32, scale and shift [B, 1, W] float32."""
    lib = kernels()
    if lib is None or dtype not in _KERNEL_DTYPES or not (_rows(x, scale) and _rows(x, shift)):
        y = F.rms_norm(x, weight.shape, weight, eps)
        return (y if scale is None else y * (1 + scale) + shift).to(dtype)
    B, S, W = x.shape
    out = torch.empty(B, S, W, dtype=dtype)
    lib.ts_modulated_rms(x.data_ptr(), B * S, W, S, weight.data_ptr(), eps,
                         None if scale is None else scale.data_ptr(), None if shift is None else shift.data_ptr(),
                         0 if scale is None else scale.stride(0), out.data_ptr(), int(dtype == torch.bfloat16),
                         torch.get_num_threads())
    return out


def gated_add(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
    """x += y * gate (or x += y), in place: x [B, S, W] float32 contiguous, y [B, S, W] float32 or
    bfloat16, gate [B, 1, W] float32."""
    lib = kernels()
    if lib is None or y.dtype not in _KERNEL_DTYPES or not y.is_contiguous() or y.shape != x.shape or \
            not _rows(x, gate):
        x += y if gate is None else y * gate
        return x
    B, S, W = x.shape
    lib.ts_gated_add(x.data_ptr(), y.data_ptr(), int(y.dtype == torch.bfloat16), B * S, W, S,
                     None if gate is None else gate.data_ptr(), 0 if gate is None else gate.stride(0),
                     torch.get_num_threads())
    return x


class Linear:
    """y = x W^T (+ b) in the compute dtype: bfloat16 (oneDNN, float32 sums), or dynamic int8: W per
    output row and x per token scaled to int8, torch's int8 product (int32 sums), scaled back."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, quantize: str | None):
        weight = weight.detach().float()
        self.bias = None if bias is None else bias.detach().to(dtype)
        self.bias_f32 = None if bias is None else bias.detach().float()  # for the int8 kernel's sums
        self.dtype, self.int8 = dtype, quantize == "int8"
        if self.int8:
            self.scale = (weight.abs().amax(1) / 127).clamp_min(1e-12)  # [N]
            self.weight_t = torch.round(weight / self.scale[:, None]).to(torch.int8).t()  # [K, N], a view of [N, K]
        else:
            self.weight = weight.to(dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.int8:
            return F.linear(x, self.weight, self.bias)
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        M, K = x.shape
        lib = kernels()
        if lib is None or self.dtype != torch.bfloat16 or x.dtype not in _KERNEL_DTYPES or x.stride(1) != 1:
            x = x.float()
            x_scale = (x.abs().amax(1, keepdim=True) / 127).clamp_min_(1e-12)  # [M, 1]
            acc = torch._int_mm(torch.round(x / x_scale).to(torch.int8), self.weight_t)  # [M, N] int32
            y = acc.float().mul_(x_scale).mul_(self.scale)
            if self.bias is not None:
                y += self.bias
            return y.to(self.dtype).reshape(*shape[:-1], -1)
        threads = torch.get_num_threads()
        q, x_scale = torch.empty(M, K, dtype=torch.int8), torch.empty(M)
        lib.ts_quantize_rows(x.data_ptr(), int(x.dtype == torch.bfloat16), x.stride(0), M, K, q.data_ptr(),
                             x_scale.data_ptr(), threads)
        acc = torch._int_mm(q, self.weight_t)  # [M, N] int32
        N = acc.shape[1]
        y = torch.empty(M, N, dtype=torch.bfloat16)
        lib.ts_dequantize(acc.data_ptr(), M, N, x_scale.data_ptr(), self.scale.data_ptr(),
                          None if self.bias_f32 is None else self.bias_f32.data_ptr(), y.data_ptr(), threads)
        return y.reshape(*shape[:-1], N)


def int8_or(weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, quantize: str | None):
    """The product of a DiT layer: int8 the way this CPU computes it fastest (quantize="int8"), else
    Linear in `dtype`."""
    if quantize == "int8" and packed_int8():
        return PackedInt8Linear(weight, bias)
    return Linear(weight, bias, dtype, quantize)
