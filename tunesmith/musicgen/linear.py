"""Faster stand-ins for the decoder's per-step linear layers.

- StreamLinear: bfloat16 weights packed for cpu_kernels' one-stream matrix-vector kernel (CPUs with
  AVX512-BF16): the fastest default on such CPUs.
- PackedLinear: the weight pre-packed once for oneDNN, so CPU matmuls with a handful of rows do not
  re-layout the weight every call (2x faster on CPUs for float32 and bfloat16 alike).
- Int8Linear: weight-only int8 with one scale per output channel; activations stay in float. On
  x86 CPUs with AVX-512 or AVX2 the weight is packed for cpu_kernels (float32 sums; on AVX2 the
  activations are rounded to int16 per row first, 15 bits); elsewhere torch's kernels.
- DynamicInt8Linear: int8 on CPUs below AVX-512 where cpu_kernels cannot be built (no C compiler, or
  TUNESMITH_CPU_KERNELS=0): the same per-channel weights, the activations rounded to int8 per call,
  through fbgemm (cpu_int8.py): there torch's weight-only int8 product runs at a fraction of float32's
  speed, fbgemm's at about twice it (BENCHMARKS.md).
- Int4Linear: weight-only int4 (CPU), a scale and zero point per group of inputs: a quarter of the
  bfloat16 bytes per step: the least memory, at a measured cost in fidelity. Packed for cpu_kernels where
  they build (groups of 64, the activations rounded to int8 rows); elsewhere torch's int4 kernel (groups of
  128), some 50x slower on a decode step.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from torch import nn

from ..cpu_int8 import PackedInt8Linear, packed_int8
from . import cpu_kernels

log = logging.getLogger("tunesmith")


@functools.cache
def cpu_packing_available(dtype: torch.dtype) -> bool:
    """oneDNN packs weights of this dtype on this CPU: tried once on a small weight, since bfloat16 needs
    AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT and an AVX2-only CPU refuses it with a RuntimeError."""
    if not (hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and torch.backends.mkldnn.is_available()):
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight(torch.zeros(8, 8, dtype=dtype), 2)
        return True
    except RuntimeError:
        return False


class PackedLinear(nn.Module):
    def __init__(self, linear: nn.Linear, rows_hint: int = 2):
        super().__init__()
        self.out_features = linear.out_features
        self.weight = nn.Parameter(torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows_hint),
                                   requires_grad=False)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")


class StreamLinear(nn.Module):
    """bfloat16 weight packed for cpu_kernels.gemv; more rows than it takes (a prefill) go through torch."""

    def __init__(self, linear: nn.Linear, kernels: cpu_kernels.Kernels):
        super().__init__()
        self.kernels = kernels
        self.weight = nn.Parameter(cpu_kernels.pack(linear.weight.detach()), requires_grad=False)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = None
        if x.device.type == "cpu" and self.weight.dtype == torch.bfloat16:
            y = cpu_kernels.gemv(self.kernels, x, self.weight, None)
        if y is None:
            y = F.linear(x, cpu_kernels.unpack(self.weight).to(x.dtype))
        return y if self.bias is None else y + self.bias


class Int8Linear(nn.Module):
    def __init__(self, linear: nn.Linear, compute_dtype: torch.dtype, kernels: cpu_kernels.Kernels | None = None):
        super().__init__()
        w = linear.weight.detach().float()
        scales = w.abs().amax(dim=1).clamp_min(1e-12) / 127  # [out]
        weight = torch.round(w / scales[:, None]).to(torch.int8)  # [out, in]
        self.kernels = kernels if kernels is not None and kernels.int8 and cpu_kernels.packable(weight) else None
        self.register_buffer("weight", weight if self.kernels is None else cpu_kernels.pack(weight))
        # The packed kernel takes float32 scales; torch's int8 kernel wants the activations' dtype.
        self.register_buffer("scales", scales if self.kernels is not None else scales.to(compute_dtype))
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = None
        if self.kernels is not None and x.device.type == "cpu":
            y = cpu_kernels.gemv(self.kernels, x, self.weight, self.scales.float())
        if y is None:
            weight = self.weight if self.kernels is None else cpu_kernels.unpack(self.weight)
            if x.device.type == "cpu" and not packed_int8():
                shape = x.shape
                y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, shape[-1]), weight, self.scales.to(x.dtype))
                y = y.view(*shape[:-1], -1)
            else:  # a GPU, or a prefill on a CPU below AVX-512, where torch's weight-only int8 product is slow
                y = F.linear(x, weight.to(x.dtype)) * self.scales.to(x.dtype)
        return y if self.bias is None else y + self.bias


class DynamicInt8Linear(nn.Module):
    """int8 weights (one scale per output row) and activations (one scale per call) through fbgemm's AVX2
    kernels, float32 sums, out in x's dtype. A prefill (x [B, T, K] with T > 1 positions: a melody prefix, a
    long piece's context) would put all its positions under one activation scale: there the int8 weight is
    widened to float32 instead (weight-only int8's values, a float product: prefills are compute-bound)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.product = PackedInt8Linear(linear.weight, None)  # fbgemm's packed weight: not a tensor
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3 and x.shape[1] > 1:
            y = F.linear(x.float(), self.product.dequantized()).to(x.dtype)
        else:
            y = self.product(x).to(x.dtype)  # the decode step: [rows, 1, K]
        return y if self.bias is None else y + self.bias


class Int4Linear(nn.Module):
    def __init__(self, linear: nn.Linear, compute_dtype: torch.dtype, kernels: cpu_kernels.Kernels | None = None):
        super().__init__()
        self.bias = linear.bias
        self.kernels = kernels if kernels is not None and kernels.int4 and cpu_kernels.int4_packable(linear.weight) \
            else None
        if self.kernels is not None:
            self.group = cpu_kernels.INT4_GROUP
            self.register_buffer("weight", cpu_kernels.pack_int4(linear.weight))
            return
        out_features, in_features = linear.weight.shape
        self.group = next(g for g in (128, 64, 32) if in_features % g == 0)
        groups = linear.weight.detach().float().view(out_features, in_features // self.group, self.group)
        low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        scale = (high - low).clamp_min(1e-8) / 15
        q = ((groups - low) / scale).round().clamp(0, 15).to(torch.int32).view(out_features, in_features)
        self.register_buffer("weight", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1))
        # The kernel computes (q - 8) * scale + zero: zero = low + 8 * scale. [groups, out, 2]
        scales_zeros = torch.stack([scale.view(out_features, -1).t(), (low + 8 * scale).view(out_features, -1).t()], -1)
        self.register_buffer("scales_zeros", scales_zeros.contiguous().to(compute_dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if self.kernels is not None:
            y = cpu_kernels.gemv(self.kernels, x, self.weight, None)
            if y is None:  # a prefill: more rows than the kernel takes
                y = F.linear(x, cpu_kernels.unpack_int4(self.weight).to(x.dtype))
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, shape[-1]), self.weight, self.group,
                                                            self.scales_zeros)
            y = y.view(*shape[:-1], -1)
        return y if self.bias is None else y + self.bias


def step_linears(lm: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of every linear layer run at each decode step."""
    found = [(lm, "heads")]
    for layer in lm.layers:
        found += [(layer.attn, "qkv"), (layer.attn, "out"), (layer, "fc1"), (layer, "fc2")]
        if layer.cross is not None:
            found += [(layer.cross, "q"), (layer.cross, "out")]
    return found


def replace_step_linears(lm: nn.Module, make) -> None:
    """Each step linear replaced by make(linear, name), name its path in the LM ("heads", "layers.0.fc1")."""
    paths = {id(module): path for path, module in lm.named_modules()}
    for parent, name in step_linears(lm):
        setattr(parent, name, make(getattr(parent, name), f"{paths[id(parent)]}.{name}".lstrip(".")))


def _maker(lm: nn.Module, device: torch.device, quantize: str | None, kernels: cpu_kernels.Kernels | None):
    """specialiser's choice for every step linear alike: linear -> its form, or None (plain nn.Linear)."""
    if quantize == "int8":
        return lambda linear: Int8Linear(linear, linear.weight.dtype, kernels)
    if quantize == "int4":  # without int4 kernels: specialiser takes int4 itself where they are
        return lambda linear: Int4Linear(linear, linear.weight.dtype)
    if kernels is not None and kernels.bf16 and lm.embed.dtype == torch.bfloat16:
        return lambda linear: StreamLinear(linear, kernels) if cpu_kernels.packable(linear.weight) \
            else PackedLinear(linear)
    if device.type == "cpu" and lm.embed.dtype != torch.float16 and cpu_packing_available(lm.embed.dtype):
        return PackedLinear  # oneDNN packs float16 only on CPUs with AVX512-FP16
    return None


def specialiser(lm: nn.Module, device: torch.device, quantize: str | None):
    """What specialise_linears makes of each step linear here, as make(linear, name) (name: its path in the
    LM), or None: plain nn.Linear (off the CPU unquantized, and float16 on the CPU). int8 / int4 when asked;
    otherwise on the CPU bfloat16 weights for the one-stream kernel, or oneDNN-packed float32 / bfloat16.

    int8 is Int8Linear on cpu_kernels where they build (AVX-512 or AVX2). Below AVX-512 without them it goes
    through fbgemm (DynamicInt8Linear), but for the heads: with the activations rounded to int8 too, they
    carry most of the logits' drift (a test decoder: 1.9% of the largest logit, 0.8% with the heads in
    float32, weight-only int8 0.5%); kept in the model's dtype they add about a tenth to an int8 step's
    bytes (musicgen-small: 34 MB to 352 MB)."""
    kernels = cpu_kernels.library() if device.type == "cpu" else None
    if quantize == "int8" and device.type == "cpu" and not (kernels is not None and kernels.int8) and packed_int8():
        head = _maker(lm, device, None, kernels) or (lambda linear: linear)
        log.debug("int8 through fbgemm (no cpu_kernels here); the heads stay %s", lm.embed.dtype)
        return lambda linear, name: head(linear) if name == "heads" else DynamicInt8Linear(linear)
    if quantize == "int4" and kernels is not None and kernels.int4:
        # The heads in int8: in int4 they carried most of the drift (random musicgen-small weights: top-1
        # agreement with float32 48.7% against 61.9%), for a twentieth of the bytes.
        return lambda linear, name: (Int8Linear(linear, linear.weight.dtype, kernels) if name == "heads"
                                     else Int4Linear(linear, linear.weight.dtype, kernels))
    make = _maker(lm, device, quantize, kernels)
    return None if make is None else lambda linear, name: make(linear)


def specialise_linears(lm: nn.Module, device: torch.device, quantize: str | None) -> bool:
    """The step linears in their faster forms (specialiser); False when they stay plain nn.Linear."""
    make = specialiser(lm, device, quantize)
    if make is not None:
        replace_step_linears(lm, make)
    return make is not None


def install_weights(lm: nn.Module, values: dict[str, torch.Tensor], make) -> None:
    """Weights of the LM (name -> float32 [out, in], as adapters.lm_weights names them) put in place: a step
    linear made again by `make` (specialiser's) from a plain nn.Linear of that weight (rounded once to the LM's dtype, as at
    load), any other weight copied into its tensor. A LoRA swap (lora_swap.py) on packed or quantized linears."""
    dtype = lm.embed.dtype
    for name, value in values.items():
        path, _, kind = name.rpartition(".")
        parent_path, _, attr = path.rpartition(".")
        parent = lm.get_submodule(parent_path) if parent_path else lm
        module = getattr(parent, attr)
        if isinstance(module, nn.Linear) or kind != "weight":
            with torch.no_grad():
                getattr(module, kind).copy_(value)
            continue
        linear = nn.Linear(value.shape[1], value.shape[0], bias=False, device="meta")
        linear.weight = nn.Parameter(value.to(lm.embed.device, dtype), requires_grad=False)
        linear.bias = module.bias
        setattr(parent, attr, make(linear, path))
    lm.step_graphs.clear()  # captured graphs, and the CPU's whole step, read the replaced linears' tensors
    lm.whole_step = None
