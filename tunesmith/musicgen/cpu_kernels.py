"""Build, load and call the packed-weight matrix-vector kernels of cpu_kernels.c.

The C file is compiled once per machine by tunesmith/native.py (the system C compiler, for the
CPU it runs on, cached). No compiler, no AVX2, a failed build, or TUNESMITH_CPU_KERNELS=0:
`library()` is None and the callers use torch's own kernels: the same computation up to rounding,
about half the speed. On an AVX-512 CPU that is said once, in a warning: it is something the user
can fix. TUNESMITH_CPU_KERNELS=avx2 builds the AVX2 kernels on a newer CPU (to compare them, and so
that the tests cover both builds on one machine).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path

import torch

from ..native import build, cpu_signature as _cpu_signature, why_not

log = logging.getLogger("tunesmith")

SOURCE = Path(__file__).with_name("cpu_kernels.c")
ROWS = 4  # output rows per packed block (ROWS in the C file)
VEC = {torch.int8: 16, torch.bfloat16: 32}  # values of one row per vector instruction (INT8_VEC, BF16_VEC)
MAX_ROWS = 16  # activation rows the kernels take at once (MAX_M in the C file)
# AVX2's int8 product (and int4's, in every build) takes more rows MAX_ROWS at a time, up to this many passes
# over the weight (a batch of prompts): 2-5x faster there than widening the int8 weight for torch's product at
# 32-128 rows (measured on 2 AVX2 cores, BENCHMARKS.md). A prefill's hundreds of rows, and the other products,
# go to torch's GEMM.
AVX2_INT8_PASSES = 8
CHUNK = 1024  # most input values per chunk: the activations' share of a chunk stays in the L1 cache
# int4: one bfloat16 scale and minimum per group of this many inputs, half a bit a weight
# more. Groups of 64 drifted least in top-1 agreement on random musicgen-small weights (BENCHMARKS.md).
INT4_GROUP = 64
INT4_STEP = 32  # inputs per 16 packed bytes of one output row (INT4_STEP in the C file)
MAX_GROUPS = 256  # groups of K an int4 product takes (MAX_GROUPS)


class Kernels:
    def __init__(self, lib: ctypes.CDLL):
        self.int8 = bool(lib.ts_has_int8())
        # int8 on AVX2: the activations rounded to int16, one scale per row (cpu_kernels.c), before the product
        self.int8_rounds_x = self.int8 and bool(lib.ts_int8_rounds_x())
        self.bf16 = bool(lib.ts_has_bf16())
        self.int4 = hasattr(lib, "ts_gemv_int4")  # AVX2 and AVX-512 builds (AVX2 code in both)
        # AVX512-BF16 and AVX2 builds: attention over a bfloat16 cache, and the whole decode step (cpu_step.py;
        # on AVX2 for int8 and int4 weights only)
        self.attend = hasattr(lib, "ts_attend_bf16")
        self.step = hasattr(lib, "ts_decode_step")
        p, i, lg = ctypes.c_void_p, ctypes.c_int, ctypes.c_long
        if self.int8:
            lib.ts_gemv_int8.argtypes = [p, i, i, i, i, p, p, i, p, i, i]
        if self.attend:
            lib.ts_attend_bf16.argtypes = [p, lg, lg, p, p, lg, lg, p, lg, p, i, i, i, i, ctypes.c_float, i]
        if self.bf16:
            lib.ts_gemv_bf16.argtypes = [p, i, i, i, i, p, i, p, i, i]
        if self.int4:
            lib.ts_gemv_int4.argtypes = [p, i, i, i, i, i, p, i, p, i, i]
        if self.step:
            lib.ts_step_workspace.argtypes = [p, i, i]
            lib.ts_step_workspace.restype = lg
            lib.ts_decode_step.argtypes = [p, p, i, i, p, p, i]
            lib.ts_gelu.argtypes = [p, p, lg]
        self.lib = lib


def _off(why: str) -> None:
    """Say why the fast path is off (once: library() is cached), where it would otherwise run."""
    if "avx512f" in _cpu_signature().split():
        log.warning("the fast CPU kernels are off (%s): torch's kernels are used, about 2x slower "
                    "(TUNESMITH_CPU_KERNELS=0 silences this)", why)
    return None


@functools.lru_cache(maxsize=None)
def library() -> Kernels | None:
    """The compiled kernels, or None where they cannot be had (torch's kernels are used instead)."""
    setting = os.environ.get("TUNESMITH_CPU_KERNELS", "1").strip().lower()
    if setting == "0" or platform.machine().lower() not in ("x86_64", "amd64"):
        return None  # off on purpose, or never applies: nothing to say
    march = "x86-64-v3" if setting == "avx2" else "native"  # x86-64-v3: AVX2, FMA, F16C
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        return _off("no C compiler found: install gcc, or set CC")
    try:
        kernels = Kernels(ctypes.CDLL(str(build(compiler, SOURCE, march))))
    except (OSError, subprocess.SubprocessError) as err:
        return _off(why_not(compiler, err))
    return kernels if kernels.int8 or kernels.bf16 else None


def _chunk(K: int, vec: int) -> int:
    """The largest multiple of `vec` that divides K and is at most CHUNK (K itself if none)."""
    return next((c for c in range(min(K, CHUNK) // vec * vec, 0, -vec) if K % c == 0), K)


def packable(weight: torch.Tensor) -> bool:
    N, K = weight.shape
    return weight.dtype in VEC and N % ROWS == 0 and K % VEC[weight.dtype] == 0


def pack(weight: torch.Tensor) -> torch.Tensor:
    """weight [N, K] -> [K/chunk, N/ROWS, chunk/vec, ROWS, vec]: per chunk of K, each block of ROWS
    output rows as one stream, the blocks one after another."""
    N, K = weight.shape
    vec = VEC[weight.dtype]
    chunk = _chunk(K, vec)
    blocks = weight.reshape(N // ROWS, ROWS, K // chunk, chunk // vec, vec)
    return blocks.permute(2, 0, 3, 1, 4).contiguous()


def packed_sizes(packed: torch.Tensor) -> tuple[int, int, int]:
    """(N, K, chunk) of a weight packed by pack."""
    chunks, blocks, steps, rows, vec = packed.shape
    return blocks * rows, chunks * steps * vec, steps * vec


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of pack: [N, K]."""
    return packed.permute(1, 3, 0, 2, 4).reshape(packed_sizes(packed)[:2])


def int4_packable(weight: torch.Tensor) -> bool:
    N, K = weight.shape
    return N % ROWS == 0 and K % INT4_GROUP == 0 and K // INT4_GROUP <= MAX_GROUPS


def pack_int4(weight: torch.Tensor) -> torch.Tensor:
    """weight [N, K] -> uint8 [K/chunk, N/ROWS, block bytes]: per chunk of K and block of ROWS output rows, the
    nibbles [chunk/32, ROWS, 16] (byte i of a row's 16: input k+i low, k+16+i high), then per group of
    INT4_GROUP inputs and row its bfloat16 scale and minimum [chunk/group, ROWS, 2]: w = minimum + scale * nibble."""
    N, K = weight.shape
    G, chunk = INT4_GROUP, _chunk(K, INT4_GROUP)
    groups = weight.detach().float().view(N, K // G, G)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = ((high - low) / 15).clamp_min(1e-30).bfloat16()  # rounded first: the nibbles fit what the kernel reads
    low = low.bfloat16()
    q = ((groups - low.float()) / scale.float()).round().clamp(0, 15).to(torch.uint8).view(N, K // 32, 2, 16)
    nibbles = (q[:, :, 0] | (q[:, :, 1] << 4)).view(N // ROWS, ROWS, K // chunk, chunk // INT4_STEP, 16)
    nibbles = nibbles.permute(2, 0, 3, 1, 4).reshape(K // chunk, N // ROWS, -1)
    pairs = torch.cat([scale, low], -1).view(N // ROWS, ROWS, K // chunk, chunk // G, 2)
    pairs = pairs.permute(2, 0, 3, 1, 4).contiguous().view(torch.uint8).reshape(K // chunk, N // ROWS, -1)
    return torch.cat([nibbles, pairs], -1).contiguous()


def int4_sizes(packed: torch.Tensor) -> tuple[int, int, int]:
    """(N, K, chunk) of a weight packed by pack_int4: a block is ROWS * (chunk/2 + chunk/group * 4) bytes."""
    chunks, blocks, size = packed.shape
    chunk = size * 2 * INT4_GROUP // (ROWS * (INT4_GROUP + 8))
    return blocks * ROWS, chunks * chunk, chunk


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """The weight pack_int4 stored, float32 [N, K] (minimum + scale * nibble)."""
    N, K, chunk = int4_sizes(packed)
    chunks, blocks, _ = packed.shape
    G, nibble_bytes = INT4_GROUP, ROWS * chunk // 2
    nibbles = packed[..., :nibble_bytes].reshape(chunks, blocks, chunk // INT4_STEP, ROWS, 1, 16)
    q = torch.cat([nibbles & 15, nibbles >> 4], 4).permute(1, 3, 0, 2, 4, 5).reshape(N, K // G, G)
    pairs = packed[..., nibble_bytes:].contiguous().view(torch.bfloat16).reshape(chunks, blocks, chunk // G, ROWS, 2)
    pairs = pairs.permute(1, 3, 0, 2, 4).reshape(N, K // G, 2).float()
    return (q.float() * pairs[..., :1] + pairs[..., 1:]).view(N, K)


def gemv(kernels: Kernels, x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor | None:
    """x [..., K] (float32 or bfloat16, CPU) times the packed weight (pack: int8 with `scale`, or bfloat16;
    pack_int4: uint8) -> [..., N] in x's dtype, or None when the kernels do not take this call (too many rows)."""
    int4 = packed.dtype == torch.uint8
    N, K, chunk = int4_sizes(packed) if int4 else packed_sizes(packed)
    M = x.numel() // K
    passes = AVX2_INT8_PASSES if int4 or (scale is not None and kernels.int8_rounds_x) else 1
    if M > MAX_ROWS * passes or x.dtype not in (torch.float32, torch.bfloat16):
        return None
    x = x.contiguous()
    y = torch.empty((*x.shape[:-1], N), dtype=x.dtype)
    is_bf16 = int(x.dtype == torch.bfloat16)
    threads = torch.get_num_threads()
    size = x.element_size()
    for first in range(0, M, MAX_ROWS):  # rows [first, first + m): row-major, so at an offset of the same tensors
        m = min(MAX_ROWS, M - first)
        xp, yp = x.data_ptr() + first * K * size, y.data_ptr() + first * N * size
        if int4:
            failed = kernels.lib.ts_gemv_int4(xp, is_bf16, m, K, chunk, INT4_GROUP, packed.data_ptr(), N, yp, is_bf16,
                                              threads)
        elif scale is None:
            failed = kernels.lib.ts_gemv_bf16(xp, is_bf16, m, K, chunk, packed.data_ptr(), N, yp, is_bf16, threads)
        else:
            failed = kernels.lib.ts_gemv_int8(xp, is_bf16, m, K, chunk, packed.data_ptr(), scale.data_ptr(), N, yp,
                                              is_bf16, threads)
        if failed:
            return None
    return y


def attend_one(kernels: Kernels, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               bias: torch.Tensor | None) -> torch.Tensor | None:
    """One query position: q (B, H, 1, hd), k/v (B, H, L, hd) bfloat16 on the CPU, bias [B, 1, 1, L]
    additive or None -> (B, H, 1, hd), or None when the kernel does not take these tensors."""
    B, H, T, hd = q.shape
    L = k.shape[2]
    usable = (kernels.attend and T == 1 and q.dtype == k.dtype == v.dtype == torch.bfloat16
              and k.stride() == v.stride() and k.stride(-1) == 1 and k.stride(-2) == hd and q.stride(-1) == 1
              and (bias is None or (bias.dtype == torch.bfloat16 and bias.shape == (B, 1, 1, L) and bias.is_contiguous())))
    if not usable:
        return None
    out = torch.empty((B, 1, H, hd), dtype=q.dtype)  # the layout the output projection reads
    failed = kernels.lib.ts_attend_bf16(q.data_ptr(), q.stride(0), q.stride(1), k.data_ptr(), v.data_ptr(),
                                        k.stride(0), k.stride(1), None if bias is None else bias.data_ptr(), L,
                                        out.data_ptr(), B, H, L, hd, hd ** -0.5, torch.get_num_threads())
    return None if failed else out.transpose(1, 2)
