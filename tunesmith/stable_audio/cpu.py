"""Stable Audio Open on the CPU: the speed levers, applied to the loaded diffusers modules.

The CUDA path runs diffusers' modules as they are (half precision); none of this is used there.

    text encoder   `encode_text`: T5 over the prompt's own tokens only (exact), float32
    DiT            `prepare_dit(transformer)`: bfloat16 weights and activations (float32 time
                   embedding, residual stream rounded to bfloat16 as diffusers does), one fused
                   q/k/v product, cross-attention keys and values computed once per prompt;
                   optional dynamic int8 (`quantize="int8"`) for the big products
    VAE decode     `OobleckDecoderCPU(vae.decoder)`: the decoder run tile by tile along time, so
                   every intermediate stays in the cache; Snake in one pass (cpu_kernels.c);
                   bfloat16 convolutions with float32 sums and a float32 residual stream

Where each default comes from, and how far each lever moves the output from float32, is in
BENCHMARKS.md (benchmarks/stable_audio_cpu.py measures both).
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
from torch import nn

log = logging.getLogger("tunesmith")

SOURCE = Path(__file__).with_name("cpu_kernels.c")
# Values (channels x samples) per tile of the VAE decoder: bfloat16 tiles of 2 MB stay in the L2 cache
# and still make long enough products for oneDNN (about 800 GFLOP/s with 2 cores at 128 x 8192).
TILE_VALUES = 1 << 20
# The dtypes the CPU path defaults to (BENCHMARKS.md: speed and distance from float32).
DEFAULT_DTYPES = {"text_encoder": torch.float32, "transformer": torch.bfloat16, "vae": torch.bfloat16}


# ----------------------------------------------------------------------------------------------- Snake


@functools.lru_cache(maxsize=None)
def snake_kernel() -> ctypes.CDLL | None:
    """The compiled Snake of cpu_kernels.c, or None (torch's ops are used: the same values, slower).
    Built once per machine by musicgen's kernel builder; off with TUNESMITH_CPU_KERNELS=0."""
    if os.environ.get("TUNESMITH_CPU_KERNELS", "1") == "0":
        return None
    from ..musicgen import cpu_kernels

    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        log.warning("no C compiler found: the VAE decoder's Snake runs as torch ops (slower)")
        return None
    try:
        lib = ctypes.CDLL(str(cpu_kernels._build(compiler, SOURCE)))
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("the Snake kernel is off (%s): torch ops are used (slower)", cpu_kernels._why_not(compiler, err))
        return None
    p, i, lg = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
    lib.ts_snake.argtypes = [p, i, lg, p, i, lg, p, p, lg, i, lg, i]
    lib.ts_snake.restype = None
    return lib


def snake(x: torch.Tensor, alpha: torch.Tensor, inv_beta: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = x + inv_beta * sin(alpha * x)^2, per channel: x [B, C, L] float32 or bfloat16 (a view
    whose rows are evenly spaced, as a slice along time of a contiguous tensor), alpha and inv_beta
    [C] float32 (Snake1d's exp(alpha) and 1 / (exp(beta) + 1e-9)), out [B, C, L] (contiguous rows,
    float32 or bfloat16). out may be x itself."""
    B, C, L = x.shape
    lib = snake_kernel()
    rows_even = x.stride(2) == 1 and x.stride(0) == C * x.stride(1)
    out_even = out.stride(2) == 1 and out.stride(0) == C * out.stride(1)
    if lib is None or not (rows_even and out_even) or x.dtype not in _SNAKE_DTYPES or out.dtype not in _SNAKE_DTYPES:
        xf = x.float()
        return out.copy_(xf + inv_beta[:, None] * torch.sin(alpha[:, None] * xf).pow(2))
    lib.ts_snake(x.data_ptr(), int(x.dtype == torch.bfloat16), x.stride(1), out.data_ptr(),
                 int(out.dtype == torch.bfloat16), out.stride(1), alpha.data_ptr(), inv_beta.data_ptr(), B * C, C, L,
                 torch.get_num_threads())
    return out


_SNAKE_DTYPES = (torch.float32, torch.bfloat16)


def _snake_params(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' Snake1d -> (alpha, inv_beta) [C] float32, computed as its forward computes them."""
    alpha, beta = module.alpha.detach().float(), module.beta.detach().float()
    if module.logscale:
        alpha, beta = torch.exp(alpha), torch.exp(beta)
    return alpha.reshape(-1).contiguous(), (beta + 1e-9).reciprocal().reshape(-1).contiguous()


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


class _Unit:
    """OobleckResidualUnit: x + conv2(snake2(conv1(snake1(x)))), conv1 k=7 dilated, conv2 k=1."""

    def __init__(self, unit: nn.Module, dtype: torch.dtype):
        self.snake1, self.snake2 = _snake_params(unit.snake1), _snake_params(unit.snake2)
        self.conv1, conv2 = _Conv(unit.conv1, dtype), _Conv(unit.conv2, dtype)
        self.halo = self.conv1.dilation * (self.conv1.kernel - 1) // 2  # samples each side the tile reads
        if self.conv1.padding != self.halo or conv2.kernel != 1:
            raise ValueError("not an Oobleck residual unit (expected a 'same' conv then a 1x1 conv)")
        self.w2 = conv2.weight[:, :, 0]  # [C, C]
        self.b2 = conv2.bias


class OobleckDecoderCPU:
    """diffusers' OobleckDecoder, computed tile by tile along time: latents [B, C_latent, T] ->
    audio [B, channels, T * hop] float32.

    Each residual unit and each upsampling convolution reads a tile of its input (plus the few
    samples its kernel reaches past the tile's edges, zeros past the signal's, as the reference's
    padding), and writes the tile of its output: every intermediate of a tile stays in the cache,
    and nothing of the full length is allocated but the residual stream (float32) between layers.
    The seams are exact: a tile reads exactly the samples the whole-signal convolution reads.

    dtype: the convolutions' (bfloat16: oneDNN's AVX512-BF16 kernels, float32 sums, rounded to
    bfloat16 between a unit's two convolutions; or float32). The first and last convolutions (64
    and 2 channels, under 1% of the work) and the residual stream stay float32.
    """

    def __init__(self, decoder: nn.Module, dtype: torch.dtype = torch.bfloat16, tile_values: int = TILE_VALUES):
        self.dtype, self.tile_values = dtype, tile_values
        self.conv_in = _Conv(decoder.conv1, torch.float32)
        self.blocks = []
        for block in decoder.block:
            up = _Conv(block.conv_t1, dtype)
            units = [_Unit(u, dtype) for u in (block.res_unit1, block.res_unit2, block.res_unit3)]
            self.blocks.append((_snake_params(block.snake1), up, units))
        self.snake_out = _snake_params(decoder.snake1)
        self.conv_out = _Conv(decoder.conv2, torch.float32)

    def _tile(self, channels: int, batch: int) -> int:
        return max(256, self.tile_values // (channels * batch))

    @torch.inference_mode()
    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        c = self.conv_in
        x = F.conv1d(latents.float(), c.weight, c.bias, padding=c.padding, dilation=c.dilation)  # [B, C0, T]
        for snake_params, up, units in self.blocks:
            x = self._upsample(x, snake_params, up)  # [B, C, T * stride]
            spare = torch.empty_like(x)
            for unit in units:
                spare = self._unit(x, unit, out=spare)
                x, spare = spare, x
            del spare
        return self._output(x)

    def _upsample(self, x: torch.Tensor, snake_params, up: _Conv) -> torch.Tensor:
        """snake then ConvTranspose1d (kernel 2s, stride s, padding p), output tile by tile: output
        sample n sums input frames n' = n + p over j with j s <= n' < j s + 2 s."""
        B, C_in, T_in = x.shape
        s, p = up.stride, up.padding
        C_out = up.weight.shape[1]
        T_out = (T_in - 1) * s - 2 * p + up.kernel
        y = torch.empty(B, C_out, T_out)
        tile = max(s, self._tile(C_out, B) // s * s)
        for n0 in range(0, T_out, tile):
            n1 = min(n0 + tile, T_out)
            ja, jb = max(0, (n0 + p) // s - 1), min(T_in, (n1 - 1 + p) // s + 1)  # input frames this tile reads
            sn = snake(x[:, :, ja:jb], *snake_params, out=torch.empty(B, C_in, jb - ja, dtype=self.dtype))
            z = F.conv_transpose1d(sn, up.weight, up.bias, stride=s)  # frames n' from ja * s
            y[:, :, n0:n1] = z[:, :, n0 + p - ja * s:n1 + p - ja * s]
        return y

    def _unit(self, x: torch.Tensor, unit: _Unit, out: torch.Tensor) -> torch.Tensor:
        """out = x + conv2(snake2(conv1(snake1(x)))), tile by tile."""
        B, C, T = x.shape
        h, tile = unit.halo, self._tile(C, B)
        padded = torch.zeros(B, C, min(tile, T) + 2 * h, dtype=self.dtype)  # snake1 of a tile and its halo
        for t0 in range(0, T, tile):
            t1 = min(t0 + tile, T)
            a, b = max(t0 - h, 0), min(t1 + h, T)
            width = t1 - t0 + 2 * h
            left, right = a - (t0 - h), (t1 + h) - b  # halo samples past the signal's edges: zeros
            s1 = padded[:, :, :width]
            if left:
                s1[:, :, :left] = 0
            if right:
                s1[:, :, width - right:] = 0
            snake(x[:, :, a:b], *unit.snake1, out=s1[:, :, left:width - right])
            c = unit.conv1
            hidden = F.conv1d(s1, c.weight, c.bias, dilation=c.dilation)  # [B, C, t1 - t0]
            snake(hidden, *unit.snake2, out=hidden)
            mixed = torch.matmul(unit.w2, hidden)  # the 1x1 conv: [C, C] @ [B, C, L]
            if unit.b2 is not None:
                mixed += unit.b2[:, None]
            torch.add(x[:, :, t0:t1], mixed, out=out[:, :, t0:t1])
        return out

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
