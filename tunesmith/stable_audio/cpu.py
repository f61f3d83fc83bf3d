"""Stable Audio Open on the CPU: the speed levers, applied to the loaded diffusers modules.

The CUDA path runs diffusers' modules as they are (half precision); none of this is used there.
for_cpu(parts, dtype, quantize) swaps the DiT and the VAE decoder of loaded parts for these.

    text encoder   float32, over the prompt's own tokens only (sample.encode_text, on every device)
    DiT            prepare_dit(transformer, dtype, quantize) -> DiTCPU, called as the transformer:
                   bfloat16 products (or dynamic int8), a float32 residual stream and float32
                   small parts, q/k/v in one product, cross-attention keys and values once per
                   prompt, attention and q/k norm + rotary in C
    VAE decode     OobleckDecoderCPU(vae.decoder, dtype, quantize)(latents, length=None): the decoder
                   tile by tile along time (exact seams), every intermediate in the cache; bfloat16
                   convolutions with float32 sums (or int8 products) and a float32 residual stream;
                   Snake, residual adds and the upsampling's phase interleave one pass each in C

DEFAULT_DTYPES holds the defaults; BENCHMARKS.md has what each lever gains and how far it moves
the output from float32 (benchmarks/stable_audio_cpu.py measures both). The C kernels
(cpu_kernels.c) are built at first use with musicgen's builder; without a compiler, torch's ops do
the same work, slower.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import os
import shutil
import subprocess
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .parts import StableAudioParts

log = logging.getLogger("tunesmith")

SOURCE = Path(__file__).with_name("cpu_kernels.c")
# Values (channels x samples) per tile of the VAE decoder: bfloat16 tiles of 2 MB stay in the L2 cache
# and still make long enough products for oneDNN (about 800 GFLOP/s with 2 cores at 128 x 8192).
TILE_VALUES = 1 << 20
MIN_TILE = 512
# The dtypes the CPU path defaults to (BENCHMARKS.md: speed and distance from float32).
DEFAULT_DTYPES = {"text_encoder": torch.float32, "transformer": torch.bfloat16, "vae": torch.bfloat16}


# ------------------------------------------------------------------------------------ C kernels, Snake


_KERNEL_DTYPES = (torch.float32, torch.bfloat16)


@functools.cache
def kernels() -> ctypes.CDLL | None:
    """The compiled kernels of cpu_kernels.c, or None (torch's ops are used: the same values up to
    rounding, slower). Built once per machine by musicgen's kernel builder; off with
    TUNESMITH_CPU_KERNELS=0. `.attention` says whether the attention kernel is in (AVX512-BF16)."""
    if os.environ.get("TUNESMITH_CPU_KERNELS", "1") == "0":
        return None
    from ..musicgen import cpu_kernels

    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        log.warning("no C compiler found: Stable Audio's CPU kernels are off, torch ops are used (slower)")
        return None
    try:
        lib = ctypes.CDLL(str(cpu_kernels._build(compiler, SOURCE)))
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("Stable Audio's CPU kernels are off (%s): torch ops are used (slower)",
                    cpu_kernels._why_not(compiler, err))
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
    for fn in (lib.ts_quantize_rows, lib.ts_dequantize, lib.ts_norm_rotate):
        fn.restype = None
    lib.attention = bool(lib.ts_has_attention())
    if lib.attention:
        lib.ts_attention_bf16.argtypes = [p, lg, lg, lg, p, lg, lg, lg, p, lg, lg, lg, p, i, i, i, i, i, i, f, i]
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


def _snake_params(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' Snake1d -> (alpha, inv_beta) [C] float32, computed as its forward computes them."""
    alpha, beta = module.alpha.detach().float(), module.beta.detach().float()
    if module.logscale:
        alpha, beta = torch.exp(alpha), torch.exp(beta)
    return alpha.reshape(-1).contiguous(), (beta + 1e-9).reciprocal().reshape(-1).contiguous()


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


# --------------------------------------------------------------------------------------- VAE decoder


def _weight(conv: nn.Module) -> torch.Tensor:
    """A convolution's effective weight: weight norm folded in (the old hook form diffusers uses, or
    the parametrization form, whose .weight computes it)."""
    from torch.nn.utils.weight_norm import WeightNorm

    for hook in conv._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm):
            return hook.compute_weight(conv).detach()
    return conv.weight.detach()


class _Conv:
    """One Conv1d / ConvTranspose1d, weight norm folded, weights in the compute dtype."""

    def __init__(self, conv: nn.Module, dtype: torch.dtype):
        self.weight = _weight(conv).to(dtype).contiguous()
        self.bias = None if conv.bias is None else conv.bias.detach().to(dtype)
        self.stride, self.padding, self.dilation = conv.stride[0], conv.padding[0], conv.dilation[0]
        self.kernel = conv.kernel_size[0]


class _Int8Conv:
    """A convolution of weight [N, C, taps] (float32) as one int8 product: weight [N, taps * C] in
    the columns' order (tap-major), a scale per output channel; activations by quantize_taps."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int):
        N, C, self.taps = weight.shape
        self.dilation = dilation
        self.scale = (weight.abs().amax((1, 2)) / 127).clamp_min(1e-12)  # [N]
        self.weight = torch.round(weight / self.scale[:, None, None]).to(torch.int8)
        self.weight = self.weight.permute(0, 2, 1).reshape(N, self.taps * C).contiguous()
        self.bias = None if bias is None else bias.float().contiguous()

    def __call__(self, x: torch.Tensor, length: int, top: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [C, length + (taps - 1) * dilation] (top: max |x| if known) -> (acc [N, length] int32,
        scale [N]): the output is acc * scale[:, None] + bias[:, None]."""
        cols, x_scale = quantize_taps(x, self.taps, self.dilation, length, top)
        return torch._int_mm(self.weight, cols), self.scale * x_scale


class _Upsample:
    """A ConvTranspose1d of kernel 2s and stride s as the kernel-2 Conv1d of its s phases:
    weight [s * C_out, C_in, 2], row r * C_out + o = (W[:, o, r + s], W[:, o, r]) (see _upsample)."""

    def __init__(self, conv: nn.Module, dtype: torch.dtype, quantize: str | None = None):
        w = _weight(conv).float()  # [C_in, C_out, 2s]
        s = self.stride = conv.stride[0]
        if conv.kernel_size[0] != 2 * s or conv.dilation[0] != 1 or conv.output_padding[0] or conv.groups != 1:
            raise ValueError("not an Oobleck upsampling convolution (expected kernel 2 x stride)")
        self.padding, self.channels = conv.padding[0], w.shape[1]
        taps = w.permute(2, 1, 0)  # [2s, C_out, C_in]
        self.weight = torch.stack([taps[s:], taps[:s]], dim=-1).reshape(s * w.shape[1], w.shape[0], 2)
        self.bias = None if conv.bias is None else conv.bias.detach().float().repeat(s)
        self.int8 = _Int8Conv(self.weight, self.bias, 1) if quantize == "int8" else None
        self.weight = None if self.int8 else self.weight.to(dtype).contiguous()
        self.bias = None if self.bias is None else self.bias.to(dtype)


class _Unit:
    """OobleckResidualUnit: x + conv2(snake2(conv1(snake1(x)))), conv1 k=7 dilated, conv2 k=1."""

    def __init__(self, unit: nn.Module, dtype: torch.dtype, quantize: str | None = None):
        self.snake1, self.snake2 = _snake_params(unit.snake1), _snake_params(unit.snake2)
        self.conv1, conv2 = _Conv(unit.conv1, dtype), _Conv(unit.conv2, dtype)
        self.halo = self.conv1.dilation * (self.conv1.kernel - 1) // 2  # samples each side the tile reads
        if self.conv1.padding != self.halo or conv2.kernel != 1:
            raise ValueError("not an Oobleck residual unit (expected a 'same' conv then a 1x1 conv)")
        self.w2 = conv2.weight[:, :, 0]  # [C, C]
        self.b2 = None if unit.conv2.bias is None else unit.conv2.bias.detach().float()
        self.int8 = None  # (conv1, conv2) as _Int8Conv
        if quantize == "int8":
            bias1 = None if unit.conv1.bias is None else unit.conv1.bias.detach()
            self.int8 = (_Int8Conv(_weight(unit.conv1).float(), bias1, self.conv1.dilation),
                         _Int8Conv(_weight(unit.conv2).float(), self.b2, 1))
            self.conv1.weight = self.w2 = None


class OobleckDecoderCPU:
    """diffusers' OobleckDecoder, computed tile by tile along time: latents [B, C_latent, T] ->
    audio [B, channels, T * hop] float32.

    Each residual unit and each upsampling convolution reads a tile of its input (plus the few
    samples its kernel reaches past the tile's edges, zeros past the signal's, as the reference's
    padding), and writes the tile of its output: every intermediate of a tile stays in the cache,
    and nothing of the full length exists but the residual stream (float32), updated in place in
    two workspaces kept between calls (release() frees them; one decoder object serves one thread
    at a time). The seams are exact: a tile reads exactly the samples the whole-signal convolution
    reads (tested down to tiles shorter than a kernel's reach).

    dtype: the convolutions' (bfloat16: oneDNN's AVX512-BF16 kernels, float32 sums, rounded to
    bfloat16 between a unit's two convolutions; or float32). The first and last convolutions (64
    and 2 channels, under 1% of the work) and the residual stream stay float32.
    quantize: "int8" makes the upsampling and residual units' convolutions int8 products (torch's
    int8 product, int32 sums; weights a scale per output channel, activations one scale per tile),
    with bfloat16 between them whatever `dtype`: about twice the speed of bfloat16, ten dB further
    from float32 (BENCHMARKS.md).
    tile_values, min_tile: a tile's size, channels x samples, and its least number of samples.
    """

    def __init__(self, decoder: nn.Module, dtype: torch.dtype = DEFAULT_DTYPES["vae"], tile_values: int = TILE_VALUES,
                 min_tile: int = MIN_TILE, quantize: str | None = None):
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize: None or 'int8', not {quantize!r}")
        dtype = torch.bfloat16 if quantize else dtype
        self.dtype, self.tile_values, self.min_tile = dtype, tile_values, min_tile
        self.conv_in = _Conv(decoder.conv1, torch.float32)
        self.blocks = []
        for block in decoder.block:
            up = _Upsample(block.conv_t1, dtype, quantize)
            units = [_Unit(u, dtype, quantize) for u in (block.res_unit1, block.res_unit2, block.res_unit3)]
            self.blocks.append((_snake_params(block.snake1), up, units))
        self.snake_out = _snake_params(decoder.snake1)
        self.conv_out = _Conv(decoder.conv2, torch.float32)
        self.release()

    def _tile(self, channels: int, batch: int) -> int:
        """Samples per tile: tile_values in all, but at least min_tile, so that each call's work
        outweighs oneDNN's reordering of the weights, which it does at every call."""
        return max(self.min_tile, self.tile_values // (channels * batch))

    @property
    def hop(self) -> int:
        """Audio samples per latent frame."""
        return math.prod(up.stride for _, up, _ in self.blocks)

    @property
    def reach(self) -> int:
        """Latent frames each side that an audio sample depends on (the decoder's receptive field,
        rounded up): walked back from the output through every layer."""
        r = self.conv_out.padding
        for _, up, units in reversed(self.blocks):
            r += sum(unit.halo for unit in units)
            r = -(-(r + up.padding) // up.stride) + 1  # input frames of a transposed conv's output window
        return r + self.conv_in.padding

    @torch.inference_mode()
    def __call__(self, latents: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """latents [B, C, T] -> audio [B, channels, T * hop] float32; with `length`, only its first
        `length` samples, decoded from the latent frames they depend on (the same values)."""
        if length is not None:
            frames = min(latents.shape[-1], -(-length // self.hop) + self.reach)
            return self(latents[:, :, :frames])[:, :, :length]
        c = self.conv_in
        x = F.conv1d(latents.float(), c.weight, c.bias, padding=c.padding, dilation=c.dilation)  # [B, C0, T]
        for i, (snake_params, up, units) in enumerate(self.blocks):
            x = self._upsample(x, snake_params, up, workspace=i % 2)  # [B, C, T * stride]
            for unit in units:
                x = self._unit(x, unit)
        return self._output(x)

    def _buffer(self, which: int, numel: int) -> torch.Tensor:
        """One of two float32 workspaces (a block writes into one while it reads the other), kept from
        call to call: a fresh buffer of this size would cost first-touch page faults (about 40 ms per
        268 MB here). They hold the two largest block outputs (sao-small: 400 MB); release() frees them."""
        if self._work[which].numel() < numel:
            self._work[which] = torch.empty(0)
            self._work[which] = torch.empty(numel)
        return self._work[which][:numel]

    def release(self):
        """Free the workspaces (the next call allocates them again)."""
        self._work = [torch.empty(0), torch.empty(0)]

    def _upsample(self, x: torch.Tensor, snake_params, up: _Upsample, workspace: int) -> torch.Tensor:
        """snake then the transposed convolution (kernel 2s, stride s, padding p) as its s phases:
        output sample n = j s + r - p is W[:, :, r]^T x[j] + W[:, :, r + s]^T x[j - 1], so one
        ordinary convolution of kernel 2 over the input frames, with s * C_out channels, gives
        every phase at once ([B, s, C_out, frames]), written interleaved into the output. oneDNN's
        ordinary convolution is about twice as fast as its transposed one here.
        -> [B, C_out, T_out], a view (rows evenly spaced) of workspace buffer `workspace`, which
        starts p samples earlier."""
        B, C_in, T_in = x.shape
        s, p, C_out = up.stride, up.padding, up.channels
        T_out = (T_in - 1) * s - 2 * p + 2 * s
        frames = T_in + 1  # j = 0 .. T_in: samples j s + r - p from -p to T_out - 1 and a few more
        y = self._buffer(workspace, B * C_out * frames * s).view(B, C_out, frames, s)  # sample n + p at [j, r]
        tile = max(self._tile(C_out, B) // s, self.min_tile)  # frames per tile
        for j0 in range(0, frames, tile):
            j1 = min(j0 + tile, frames)
            a, b = max(j0 - 1, 0), min(j1, T_in)  # input frames read: j - 1 and j
            sn = torch.zeros(B, C_in, j1 - j0 + 1, dtype=self.dtype)  # frames j0 - 1 .. j1 - 1, zero outside
            snake(x[:, :, a:b], *snake_params, out=sn[:, :, a - (j0 - 1):b - (j0 - 1)])
            if up.int8:
                phases = torch.empty(B, s * C_out, j1 - j0, dtype=torch.bfloat16)
                for i in range(B):
                    acc, scale = up.int8(sn[i], j1 - j0)  # [s * C_out, j1 - j0] int32
                    dequantize_rows(acc, scale, up.int8.bias, None, out=phases[i])
                phases = phases.view(B, s, C_out, j1 - j0)
            else:
                phases = F.conv1d(sn, up.weight, up.bias).view(B, s, C_out, j1 - j0)
            interleave(y[:, :, j0:j1], phases)
        return y.view(B, C_out, frames * s)[:, :, p:p + T_out]

    def _unit(self, x: torch.Tensor, unit: _Unit) -> torch.Tensor:
        """x += conv2(snake2(conv1(snake1(x)))), tile by tile, in place. A tile reads h samples each
        side; those before it were overwritten by the tile before, whose snake1 of them (and of the h
        after its end) is kept: s1's column j is sample t0 - h + j."""
        B, C, T = x.shape
        h, tile = unit.halo, self._tile(C, B)
        s1 = torch.empty(B, C, min(tile, T) + 2 * h, dtype=self.dtype)
        mixed = torch.empty(B, C, min(tile, T), dtype=self.dtype)
        previous = 0  # s1 columns [previous, previous + 2h) hold samples [t0 - h, t0 + h) of the next tile
        for t0 in range(0, T, tile):
            t1 = min(t0 + tile, T)
            width = t1 - t0 + 2 * h
            if t0 == 0:
                s1[:, :, :h] = 0  # before the signal
                done = h
            else:
                s1[:, :, :2 * h] = s1[:, :, previous:previous + 2 * h].clone()  # samples [t0 - h, t0 + h)
                done = 2 * h
            first, last = t0 - h + done, min(t1 + h, T)  # samples still to take through snake1
            if last > first:
                snake(x[:, :, first:last], *unit.snake1, out=s1[:, :, done:done + last - first])
            if last - (t0 - h) < width:
                s1[:, :, max(last - (t0 - h), 0):width] = 0  # after the signal
            if unit.int8:
                self._unit_int8(x[:, :, t0:t1], s1[:, :, :width], unit, mixed)
                previous = t1 - t0
                continue
            c = unit.conv1
            hidden = F.conv1d(s1[:, :, :width], c.weight, c.bias, dilation=c.dilation)  # [B, C, t1 - t0]
            snake(hidden, *unit.snake2, out=hidden)
            out = mixed[:, :, :t1 - t0]
            for b in range(B):
                torch.mm(unit.w2, hidden[b], out=out[b])  # the 1x1 conv
            add_rows(x[:, :, t0:t1], out, unit.b2)
            previous = t1 - t0
        return x

    @staticmethod
    def _unit_int8(x: torch.Tensor, s1: torch.Tensor, unit: _Unit, mixed: torch.Tensor):
        """One tile of a residual unit in int8: x [B, C, L] += conv2(snake2(conv1(s1))), s1 [B, C, L +
        2 halo] its snake1, mixed a bfloat16 workspace of at least B * C * L values."""
        B, C, L = x.shape
        conv1, conv2 = unit.int8
        hidden = mixed.view(-1)[:B * C * L].view(B, C, L)
        for b in range(B):
            acc, scale = conv1(s1[b], L)  # [C, L] int32
            top = dequantize_rows(acc, scale, conv1.bias, unit.snake2, out=hidden[b])
            acc, scale = conv2(hidden[b], L, top)
            add_dequantized(x[b], acc, scale, conv2.bias)

    def _output(self, x: torch.Tensor) -> torch.Tensor:
        """snake then the last convolution (to the audio channels), float32, tile by tile."""
        B, C, T = x.shape
        c = self.conv_out
        h, tile = c.padding, self._tile(C, B)
        audio = torch.empty(B, c.weight.shape[0], T)
        for t0 in range(0, T, tile):
            t1 = min(t0 + tile, T)
            a, b = max(t0 - h, 0), min(t1 + h, T)
            s = F.pad(x[:, :, a:b], (a - (t0 - h), (t1 + h) - b))
            snake(s, *self.snake_out, out=s)
            audio[:, :, t0:t1] = F.conv1d(s, c.weight, c.bias, dilation=c.dilation)
        return audio


# ------------------------------------------------------------------------------------------------- DiT


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v: q (B, H, Tq, D), k and v (B, H_kv, Tk, D), H a multiple of H_kv (head
    h reads key/value head h // (H / H_kv)) -> [B, Tq, H * D]. bfloat16 goes to cpu_kernels.c's
    kernel (about 3x torch's CPU flash attention at these sizes, the same rounding); the rest to
    torch's scaled_dot_product_attention."""
    B, H, Tq, D = q.shape
    H_kv, Tk = k.shape[1], k.shape[2]
    lib = kernels()
    usable = (lib is not None and lib.attention and q.dtype == k.dtype == v.dtype == torch.bfloat16
              and q.stride(3) == k.stride(3) == v.stride(3) == 1 and D % 16 == 0 and D <= 128 and H % H_kv == 0)
    if usable:
        out = torch.empty(B, Tq, H, D, dtype=q.dtype)
        failed = lib.ts_attention_bf16(q.data_ptr(), *q.stride()[:3], k.data_ptr(), *k.stride()[:3], v.data_ptr(),
                                       *v.stride()[:3], out.data_ptr(), B, H, H_kv, Tq, Tk, D, D ** -0.5,
                                       torch.get_num_threads())
        if not failed:
            return out.view(B, Tq, H * D)
    if H_kv != H:
        k, v = k.repeat_interleave(H // H_kv, dim=1), v.repeat_interleave(H // H_kv, dim=1)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, Tq, H * D)


class _Linear:
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


def _norm(norm: nn.Module | None) -> tuple | None:
    """A LayerNorm's (shape, weight, bias, eps), float32, or None."""
    if norm is None:
        return None
    return (norm.normalized_shape, None if norm.weight is None else norm.weight.detach().float(),
            None if norm.bias is None else norm.bias.detach().float(), norm.eps)


def _layer_norm(x: torch.Tensor, norm: tuple) -> torch.Tensor:
    shape, weight, bias, eps = norm
    return F.layer_norm(x.float(), shape, weight, bias, eps)


class _Block:
    """One StableAudioDiTBlock: self-attention (rotary, optional q/k LayerNorm), cross-attention,
    SwiGLU feed-forward, the residual stream float32 between them."""

    def __init__(self, block: nn.Module, dtype: torch.dtype, quantize: str | None):
        a1, a2 = block.attn1, block.attn2
        self.heads, self.dtype = a1.heads, dtype
        self.head_dim = a1.to_q.weight.shape[0] // a1.heads
        self.kv_heads = a2.to_k.weight.shape[0] // self.head_dim
        self.norm1, self.norm2, self.norm3 = _norm(block.norm1), _norm(block.norm2), _norm(block.norm3)
        self.qkv = _Linear(torch.cat([a1.to_q.weight, a1.to_k.weight, a1.to_v.weight]), None, dtype, quantize)
        self.out1 = _Linear(a1.to_out[0].weight, a1.to_out[0].bias, dtype, quantize)
        self.norm_q1, self.norm_k1 = _norm(a1.norm_q), _norm(a1.norm_k)
        self.q2 = _Linear(a2.to_q.weight, None, dtype, quantize)
        self.kv2 = _Linear(torch.cat([a2.to_k.weight, a2.to_v.weight]), None, dtype, None)  # once per prompt
        self.out2 = _Linear(a2.to_out[0].weight, a2.to_out[0].bias, dtype, quantize)
        self.norm_q2, self.norm_k2 = _norm(a2.norm_q), _norm(a2.norm_k)
        swiglu, out = block.ff.net[0], block.ff.net[2]
        self.ff_in = _Linear(swiglu.proj.weight, swiglu.proj.bias, dtype, quantize)
        self.ff_out = _Linear(out.weight, out.bias, dtype, quantize)

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        B, S, _ = x.shape
        return x.view(B, S, heads, self.head_dim).transpose(1, 2)  # (B, heads, S, head_dim)

    def _qk_norm(self, x: torch.Tensor, norm: tuple | None) -> torch.Tensor:
        return x if norm is None else _layer_norm(x, norm).to(self.dtype)

    def _norm_rotate(self, x: torch.Tensor, norm: tuple | None, rotary: tuple | None) -> torch.Tensor:
        """q or k (B, heads, S, head_dim): the per-head LayerNorm, then rotary (self-attention), as
        diffusers' processor applies them; in bfloat16 one pass of cpu_kernels.c, in place (x is a
        view of this block's own projection output)."""
        if norm is None and rotary is None:
            return x
        lib = kernels()
        B, H, S, D = x.shape
        if lib is None or x.dtype != torch.bfloat16 or x.stride(3) != 1 or D > 512:
            x = self._qk_norm(x, norm)
            return x if rotary is None else _rotate(x, rotary)
        _, weight, bias, eps = norm if norm is not None else (None, None, None, 0.0)
        cos, sin = (None, None) if rotary is None else (t.float().contiguous() for t in rotary)
        lib.ts_norm_rotate(x.data_ptr(), *x.stride()[:3], B, H, S, D, int(norm is not None),
                           None if weight is None else weight.data_ptr(), None if bias is None else bias.data_ptr(),
                           eps, None if cos is None else cos.data_ptr(), None if sin is None else sin.data_ptr(),
                           0 if rotary is None else cos.shape[-1], torch.get_num_threads())
        return x

    def context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-attention's keys and values of the (projected) conditioning tokens [B, T, D_c]:
        (B, kv_heads, T, head_dim) each, k normed (per head: the same before diffusers' repeat of
        the kv heads as after)."""
        k, v = self.kv2(context.to(self.dtype)).chunk(2, dim=-1)
        k, v = self._heads(k, self.kv_heads), self._heads(v, self.kv_heads)
        return self._qk_norm(k, self.norm_k2).contiguous(), v.contiguous()

    def __call__(self, x: torch.Tensor, rotary: tuple | None, k2: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        # x [B, S, D] float32
        q, k, v = self.qkv(_layer_norm(x, self.norm1).to(self.dtype)).chunk(3, dim=-1)
        q, k, v = self._heads(q, self.heads), self._heads(k, self.heads), self._heads(v, self.heads)
        q, k = self._norm_rotate(q, self.norm_q1, rotary), self._norm_rotate(k, self.norm_k1, rotary)
        x = x + self.out1(attention(q, k, v))  # attention: [B, S, D]

        q = self._heads(self.q2(_layer_norm(x, self.norm2).to(self.dtype)), self.heads)
        x = x + self.out2(attention(self._norm_rotate(q, self.norm_q2, None), k2, v2))

        hidden, gate = self.ff_in(_layer_norm(x, self.norm3).to(self.dtype)).chunk(2, dim=-1)
        return x + self.ff_out(hidden * F.silu(gate))


def _rotate(x: torch.Tensor, rotary: tuple) -> torch.Tensor:
    """diffusers' partial rotary embedding (use_real, unbind dim -2) on the first rot_dim channels of
    each head, computed in float32 as diffusers computes it."""
    cos, sin = rotary  # [S, rot_dim]
    rot = cos.shape[-1]
    head, tail = x[..., :rot].float(), x[..., rot:]
    real, imag = head.unflatten(-1, (2, -1)).unbind(-2)
    turned = torch.cat([-imag, real], dim=-1)
    return torch.cat([(head * cos + turned * sin).to(x.dtype), tail], dim=-1)


class DiTCPU(nn.Module):
    """diffusers' StableAudioDiTModel for the CPU, called as it is called (same arguments, same
    output type) and computing the same function:

    - the blocks' products in `dtype` (bfloat16: oneDNN's AVX512-BF16 kernels, float32 sums), or with
      quantize="int8" in dynamic int8 (weights per row, activations per token);
    - the residual stream, LayerNorms, time embedding, the small input and output projections and
      the conditioning projections in float32 (diffusers in bfloat16 rounds all of these);
    - self-attention's q, k, v in one product;
    - cross-attention keys and values computed once per conditioning: kept with a copy of the
      conditioning states, and reused while states of equal values come back (every step of a
      sampling loop); comparing them costs microseconds.

    Attention masks are not taken (Stable Audio's pipelines pass none)."""

    def __init__(self, transformer: nn.Module, dtype: torch.dtype = torch.bfloat16, quantize: str | None = None):
        super().__init__()
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize must be None or 'int8', not {quantize!r}")
        t = transformer
        self.config, self.compute_dtype, self.quantize = t.config, dtype, quantize
        for name in ("time_proj", "timestep_proj", "global_proj", "cross_attention_proj", "preprocess_conv",
                     "proj_in", "proj_out", "postprocess_conv"):
            setattr(self, name, getattr(t, name).float())
        self.blocks = [_Block(b, dtype, quantize) for b in t.transformer_blocks]
        self._context_of = None  # (conditioning states, [(k, v) per block])

    @property
    def dtype(self) -> torch.dtype:
        """What it takes and returns (callers cast their inputs to the model's dtype): float32, so
        that the time steps keep their precision. The products run in compute_dtype."""
        return torch.float32

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, *args, **kwargs) -> DiTCPU:
        """Stays as prepare_dit made it: the CPU, its dtypes. A move to another device is refused."""
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError("DiTCPU runs on the CPU only: move the diffusers transformer instead")
        return self

    def _context(self, encoder_hidden_states: torch.Tensor) -> list:
        states = encoder_hidden_states.float()
        cached = self._context_of
        if cached is not None and cached[0].shape == states.shape and torch.equal(cached[0], states):
            return cached[1]
        context = self.cross_attention_proj(states)  # [B, T, D_c]
        kv = [block.context(context) for block in self.blocks]
        self._context_of = (states.clone(), kv)
        return kv

    @torch.inference_mode()
    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor = None,
                encoder_hidden_states: torch.Tensor = None, global_hidden_states: torch.Tensor = None,
                rotary_embedding=None, return_dict: bool = True, attention_mask=None, encoder_attention_mask=None):
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        if attention_mask is not None or encoder_attention_mask is not None:
            raise ValueError("DiTCPU takes no attention masks")
        x = hidden_states.float()  # [B, C, T]
        kv = self._context(encoder_hidden_states)
        time = self.timestep_proj(self.time_proj(timestep.float()))  # [B or 1, D]
        g = self.global_proj(global_hidden_states.float()) + time.unsqueeze(1)  # [B, 1, D]
        x = self.proj_in((self.preprocess_conv(x) + x).transpose(1, 2))  # [B, T, D]
        x = torch.cat([g.expand(x.shape[0], -1, -1), x], dim=1)  # the global token first: [B, 1 + T, D]
        for block, (k2, v2) in zip(self.blocks, kv):
            x = block(x, rotary_embedding, k2, v2)
        x = self.proj_out(x).transpose(1, 2)[:, :, 1:]  # [B, C, T]
        sample = self.postprocess_conv(x) + x
        return Transformer2DModelOutput(sample=sample) if return_dict else (sample,)


def prepare_dit(transformer: nn.Module, dtype: torch.dtype = DEFAULT_DTYPES["transformer"],
                quantize: str | None = None) -> DiTCPU:
    """The CPU form of a loaded StableAudioDiTModel (see DiTCPU). It copies the weights it needs in
    `dtype`; the transformer itself can be dropped afterwards."""
    return DiTCPU(transformer, dtype, quantize).eval()


def for_cpu(parts: StableAudioParts, dtype: torch.dtype = DEFAULT_DTYPES["transformer"],
            quantize: str | None = None) -> StableAudioParts:
    """Parts loaded in float32 on the CPU, with the DiT and the VAE decoder swapped for their CPU forms
    in `dtype` (bfloat16 or float32; quantize="int8": the DiT's and the decoder's products in int8).
    The VAE's encoder (audio-to-audio) and the text encoder stay float32."""
    parts.transformer = prepare_dit(parts.transformer, dtype, quantize)
    parts.decoder = OobleckDecoderCPU(parts.vae.decoder, dtype, quantize=quantize)
    parts.vae.decoder = None  # its weights live on in the CPU decoder's copies
    return parts
