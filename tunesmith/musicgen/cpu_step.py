"""The whole CPU decode step (one query position) in one call to cpu_kernels' ts_decode_step.

A torch step is some 20 operations per layer, each called from Python and each starting the
threads anew; for musicgen-small on two cores that is a fifth of the step. ts_decode_step runs
every layer's norms, products, attention, GELU and residual adds in one OpenMP region.

It takes a model whose step linears are all packed for the kernels (bfloat16 StreamLinear or int8
Int8Linear; on AVX2 CPUs int8, or int4 Int4Linear with int8 heads) with a bfloat16 cache; anything else, and more rows than the
kernels take, goes through the torch modules instead (the kernel itself also declines bfloat16
weights on AVX2).
"""

from __future__ import annotations

import ctypes

import torch

from . import cpu_kernels

_p, _i = ctypes.c_void_p, ctypes.c_int
_Pair = _p * 2


class _Linear(ctypes.Structure):  # ts_linear
    _fields_ = [("w", _p), ("scale", _p), ("N", _i), ("K", _i), ("chunk", _i), ("group", _i)]


class _Layer(ctypes.Structure):  # ts_layer
    _fields_ = [("attn_norm", _Pair), ("qkv", _Linear), ("attn_out", _Linear), ("k_cache", _p), ("v_cache", _p),
                ("cross_norm", _Pair), ("cross_q", _Linear), ("cross_out", _Linear), ("cross_k", _p), ("cross_v", _p),
                ("mlp_norm", _Pair), ("fc1", _Linear), ("fc2", _Linear)]


class _Model(ctypes.Structure):  # ts_model
    _fields_ = [("n_layers", _i), ("dim", _i), ("heads", _i), ("head_dim", _i), ("ffn_dim", _i), ("max_len", _i),
                ("text_len", _i), ("eps", ctypes.c_float), ("layers", ctypes.POINTER(_Layer)), ("norm", _Pair),
                ("lm_heads", _Linear), ("cross_bias", _p)]


class CPUStep:
    """ts_decode_step's view of one model, cache and condition: pointers into their tensors (kept
    alive here), built again whenever the cache or the condition is replaced."""

    def __init__(self, lm, kernels: cpu_kernels.Kernels, rows: int):
        self.kernels, self.rows = kernels, rows
        self._tensors: list[torch.Tensor] = []  # what the pointers below point into
        cfg = lm.cfg
        layers = (_Layer * cfg.n_layers)()
        for layer, spec in zip(lm.layers, layers):
            spec.attn_norm = self._norm(layer.attn_norm)
            spec.qkv, spec.attn_out = self._linear(layer.attn.qkv), self._linear(layer.attn.out)
            spec.k_cache, spec.v_cache = layer.attn.cache.k.data_ptr(), layer.attn.cache.v.data_ptr()
            if layer.cross is not None:
                spec.cross_norm = self._norm(layer.cross_norm)
                spec.cross_q, spec.cross_out = self._linear(layer.cross.q), self._linear(layer.cross.out)
                spec.cross_k, spec.cross_v = layer.cross.k.data_ptr(), layer.cross.v.data_ptr()
            spec.mlp_norm = self._norm(layer.mlp_norm)
            spec.fc1, spec.fc2 = self._linear(layer.fc1), self._linear(layer.fc2)
        cache = lm.layers[0].attn.cache.k  # (rows, heads, max_len, head_dim)
        cross = lm.cross_mask  # [rows, 1, 1, text_len] additive, or None (melody models)
        self.model = _Model(n_layers=cfg.n_layers, dim=cfg.dim, heads=cfg.n_heads, head_dim=cfg.head_dim,
                            ffn_dim=cfg.ffn_dim, max_len=cache.shape[2],
                            text_len=0 if cross is None else cross.shape[-1], eps=lm.norm.eps, layers=layers,
                            norm=self._norm(lm.norm), lm_heads=self._linear(lm.heads),
                            cross_bias=None if cross is None else cross.data_ptr())
        self._layers = layers
        threads = torch.get_num_threads()
        size = kernels.lib.ts_step_workspace(ctypes.byref(self.model), rows, threads)
        self.work = torch.empty(size, dtype=torch.float32)
        self.threads = threads

    def _keep(self, tensor: torch.Tensor) -> int:
        self._tensors.append(tensor)
        return tensor.data_ptr()

    def _norm(self, norm: torch.nn.LayerNorm):
        return _Pair(self._keep(norm.weight.detach().float().contiguous()),
                     self._keep(norm.bias.detach().float().contiguous()))

    def _linear(self, module) -> _Linear:
        packed, scale = module.weight, getattr(module, "scales", None)
        if packed.dtype == torch.uint8:  # int4
            N, K, chunk = cpu_kernels.int4_sizes(packed)
            return _Linear(w=self._keep(packed), scale=None, N=N, K=K, chunk=chunk, group=module.group)
        N, K, chunk = cpu_kernels.packed_sizes(packed)
        return _Linear(w=self._keep(packed), scale=None if scale is None else self._keep(scale), N=N, K=K, chunk=chunk)

    def __call__(self, x: torch.Tensor, pos: int) -> torch.Tensor | None:
        """x [rows, dim] float32 (changed in place), the new position pos -> logits [rows, N] float32,
        or None if the kernel does not take the call."""
        if torch.get_num_threads() != self.threads or x.shape[0] != self.rows or not x.is_contiguous():
            return None  # the workspace was sized for these
        logits = torch.empty((self.rows, self.model.lm_heads.N), dtype=torch.float32)
        failed = self.kernels.lib.ts_decode_step(ctypes.byref(self.model), x.data_ptr(), self.rows, pos,
                                                 logits.data_ptr(), self.work.data_ptr(), self.threads)
        return None if failed else logits


def build(lm, rows: int) -> CPUStep | None:
    """The whole-step kernel for `lm` and its current cache and condition, or None where it does not apply."""
    from .linear import Int4Linear, Int8Linear, StreamLinear, step_linears

    kernels = cpu_kernels.library()
    if kernels is None or not kernels.step or lm.embed.device.type != "cpu" or rows > cpu_kernels.MAX_ROWS:
        return None
    cache = lm.layers[0].attn.cache
    if cache is None or cache.k.dtype != torch.bfloat16 or cache.k.shape[0] != rows:
        return None
    for layer in lm.layers:
        if layer.cross is not None and (layer.cross.k is None or layer.cross.k.dtype != torch.bfloat16
                                        or not layer.cross.k.is_contiguous()):
            return None
    linears = [getattr(parent, name) for parent, name in step_linears(lm)]
    packed = all(
        (isinstance(m, StreamLinear) and m.weight.dtype == torch.bfloat16 and m.bias is None)
        or (isinstance(m, (Int8Linear, Int4Linear)) and m.kernels is not None and m.bias is None) for m in linears)
    cross = lm.cross_mask
    if not packed or (cross is not None and (cross.dtype != torch.bfloat16 or not cross.is_contiguous())):
        return None
    return CPUStep(lm, kernels, rows)
