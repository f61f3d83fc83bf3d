"""int8 products through torch's x86 quantized engine (fbgemm), for CPUs below AVX-512: what MusicGen's
decoder and the diffusion families' DiTs (diffusion/ops.py) share.

On an AVX2 CPU fbgemm's int8 kernels run at 40-44 GOP/s where torch's `_int_mm` runs at 0.2-0.8 and its
weight-only int8 product (`_weight_int8pack_mm`) well below float32 (BENCHMARKS.md): there int8 pays only
through fbgemm. On AVX-512 CPUs the callers keep their own int8 paths.
"""

from __future__ import annotations

import functools

import torch


class PackedInt8Linear:
    """y = x W^T (+ b) in int8 through fbgemm: W per output row, x one scale per call (dynamic, 7-bit on x86
    so that AVX2's 16-bit pair sums cannot saturate), float32 in and out. On CPUs without AVX512-VNNI this is
    where int8 pays: AVX2 has fbgemm's int8 kernels, while torch's _int_mm runs there at a fraction of
    float32's speed."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        import warnings

        weight = weight.detach().float()
        scale = (weight.abs().amax(1) / 127).clamp_min(1e-12).double()  # [N]
        with warnings.catch_warnings():  # torch marks its quantized tensors deprecated; the kernels are current
            warnings.simplefilter("ignore")
            q = torch.quantize_per_channel(weight, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(q, None if bias is None else bias.detach().float())
        self.out_features = weight.shape[0]
        self.nbytes = weight.numel() + 12 * weight.shape[0]  # int8 weights, a scale, zero point and bias a row

    def int8_weight(self) -> torch.Tensor:
        """The packed weight's int8 values [N, K] (to compare two packings)."""
        return torch.ops.quantized.linear_unpack(self.packed)[0].int_repr()

    def dequantized(self) -> torch.Tensor:
        """The weight as float32 [N, K]: each int8 value times its row's scale."""
        return torch.ops.quantized.linear_unpack(self.packed)[0].dequantize()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]).float().contiguous(), self.packed, True)
        return y.reshape(*shape[:-1], -1)


@functools.cache
def packed_int8() -> bool:
    """Whether int8 products should go through PackedInt8Linear: a CPU below AVX512 (where _int_mm and the
    weight-only int8 product are slow) whose torch has the x86 quantized engine."""
    capability = torch.backends.cpu.get_cpu_capability()
    engines = torch.backends.quantized.supported_engines
    return "AVX512" not in capability and any(e in engines for e in ("x86", "fbgemm"))
