"""diffusers' OobleckDecoder (the VAE decoder of Stable Audio and ACE-Step) on the CPU, tile by tile
along time: bfloat16 convolutions with float32 sums (or int8 products), a float32 residual stream,
Snake, residual adds and the upsampling's phase interleave one pass each in C (ops.py)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .ops import add_dequantized, add_rows, dequantize_rows, interleave, quantize_taps, snake

# Values (channels x samples) per tile of the VAE decoder: bfloat16 tiles of 2 MB stay in the L2 cache
# and still make long enough products for oneDNN (about 800 GFLOP/s with 2 cores at 128 x 8192).
TILE_VALUES = 1 << 20
MIN_TILE = 512


def _snake_params(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers' Snake1d -> (alpha, inv_beta) [C] float32, computed as its forward computes them."""
    alpha, beta = module.alpha.detach().float(), module.beta.detach().float()
    if module.logscale:
        alpha, beta = torch.exp(alpha), torch.exp(beta)
    return alpha.reshape(-1).contiguous(), (beta + 1e-9).reciprocal().reshape(-1).contiguous()


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

    def __init__(self, decoder: nn.Module, dtype: torch.dtype = torch.bfloat16, tile_values: int = TILE_VALUES,
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
