"""ACE-Step 1.5's DiT on the CPU: diffusers' AceStepTransformer1DModel, the same function, with the big
products in bfloat16 around a float32 residual stream.

prepare_dit(transformer, dtype, quantize) -> DiTCPU, called as the transformer (same arguments, same
output type); for_cpu(parts, dtype, quantize) swaps the DiT and the VAE decoder of loaded parts for
their CPU forms:

- the products of every block (q/k/v in one, attention out, cross-attention q and out, gate/up in
  one, down) in `dtype`: bfloat16 (oneDNN's AVX512-BF16 kernels, float32 sums), or with
  quantize="int8" dynamic int8; float32 computes diffusers' forward to float32 rounding (the tests'
  reference for the rest);
- the residual stream, the RMSNorms, the AdaLN modulation, both timestep embeddings, the patchify
  convolutions in and out and the condition projection in float32 (diffusers cast to bfloat16 rounds
  all of these, and the timestep itself: 13.7 dB from float32 at 2B sizes, BENCHMARKS.md);
- q/k RMSNorm and rotary in one C pass, attention in C with float32 scores (diffusion/ops.py); the
  sliding-window layers skip the key blocks wholly outside their window;
- cross-attention keys and values once per conditioning: kept with a copy of the condition states
  and reused while states of equal values come back (every step of a song).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion import ops
from ..diffusion.dit import CPUTransformer
from ..diffusion.oobleck import OobleckDecoderCPU
from .parts import AceStepParts


def _linear(linears: list[nn.Linear], width: int, rows: list[int], dtype: torch.dtype,
            quantize: str | None) -> ops.Linear:
    """diffusers Linears of one input, their outputs side by side in one product; shapes checked."""
    for linear, n in zip(linears, rows):
        if tuple(linear.weight.shape) != (n, width):
            raise ValueError(f"ACE-Step DiT weight of shape {tuple(linear.weight.shape)}, expected {(n, width)}")
    weight = torch.cat([linear.weight.detach() for linear in linears]) if len(linears) > 1 else linears[0].weight
    biases = [linear.bias for linear in linears]
    bias = None if biases[0] is None else torch.cat([b.detach() for b in biases])
    return ops.Linear(weight, bias, dtype, quantize)


def _float(module: nn.Module) -> nn.Module:
    """A float32 module: itself if it is one (shared, no copy), else a float32 copy (the transformer
    given stays as it was)."""
    if all(p.dtype == torch.float32 for p in module.parameters()):
        return module
    return copy.deepcopy(module).float()


def _rms(norm: nn.Module, width: int) -> tuple[torch.Tensor, float]:
    """diffusers' RMSNorm -> (weight [width] float32, eps)."""
    if norm.weight is None or tuple(norm.weight.shape) != (width,) or norm.bias is not None:
        raise ValueError(f"ACE-Step DiT RMSNorm without a weight of {width} values")
    return norm.weight.detach().float(), norm.eps


def _rotate(x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """diffusers' rotary embedding (use_real, unbind dim -2: rotate-half), float32: x (B, H, S, D)."""
    cos, sin = rotary  # [S, D]
    real, imag = x.unflatten(-1, (2, -1)).unbind(-2)
    return x * cos + torch.cat([-imag, real], dim=-1) * sin


def _norm_rotate(x: torch.Tensor, norm: tuple, rotary: tuple | None) -> torch.Tensor:
    """The per-head RMSNorm, then rotary (self-attention), on q or k (B, heads, S, head_dim) as
    diffusers' processor applies them: in bfloat16 one pass of diffusion/kernels.c in place (x is a view of
    its block's own projection output), else in float32 with torch."""
    if ops.norm_rotate(x, "rms", norm[0], None, norm[1], rotary):
        return x
    y = F.rms_norm(x.float(), norm[0].shape, *norm)
    return (y if rotary is None else _rotate(y, rotary)).to(x.dtype)


class _Block:
    """One AceStepTransformerBlock: AdaLN self-attention (GQA, rotary, a sliding window or none),
    cross-attention to the condition states, AdaLN SwiGLU, the residual stream float32 between them."""

    def __init__(self, layer: nn.Module, window: int | None, dtype: torch.dtype, quantize: str | None):
        a, c = layer.self_attn, layer.cross_attn
        H, H_kv, D = a.heads, a.kv_heads, a.head_dim
        W = layer.self_attn_norm.weight.shape[0]
        self.heads, self.kv_heads, self.head_dim, self.window, self.dtype = H, H_kv, D, window, dtype
        self.table = layer.scale_shift_table.detach().float()  # [1, 6, W]
        if tuple(self.table.shape) != (1, 6, W):
            raise ValueError(f"ACE-Step DiT scale_shift_table of shape {tuple(self.table.shape)}")
        self.norm1, self.norm2, self.norm3 = (_rms(n, W) for n in (layer.self_attn_norm, layer.cross_attn_norm,
                                                                  layer.mlp_norm))
        self.qkv = _linear([a.to_q, a.to_k, a.to_v], W, [H * D, H_kv * D, H_kv * D], dtype, quantize)
        self.out1 = _linear([a.to_out[0]], H * D, [W], dtype, quantize)
        self.norm_q1, self.norm_k1 = _rms(a.norm_q, D), _rms(a.norm_k, D)
        self.q2 = _linear([c.to_q], W, [H * D], dtype, quantize)
        self.kv2 = _linear([c.to_k, c.to_v], W, [H_kv * D, H_kv * D], dtype, None)  # once per prompt
        self.out2 = _linear([c.to_out[0]], H * D, [W], dtype, quantize)
        self.norm_q2, self.norm_k2 = _rms(c.norm_q, D), _rms(c.norm_k, D)
        mlp = layer.mlp
        inner = mlp.gate_proj.weight.shape[0]
        self.gate_up = _linear([mlp.gate_proj, mlp.up_proj], W, [inner, inner], dtype, quantize)
        self.down = _linear([mlp.down_proj], inner, [W], dtype, quantize)

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        B, S, _ = x.shape
        return x.view(B, S, heads, self.head_dim).transpose(1, 2)  # (B, heads, S, head_dim)

    def context(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys (normed) and values of the projected condition states [B, S_c, W]:
        (B, kv_heads, S_c, head_dim) each."""
        k, v = self.kv2(states.to(self.dtype)).chunk(2, dim=-1)
        k, v = self._heads(k, self.kv_heads), self._heads(v, self.kv_heads)
        return _norm_rotate(k, self.norm_k2, None).contiguous(), v.contiguous()

    def __call__(self, x: torch.Tensor, modulation: torch.Tensor, rotary: tuple, k2: torch.Tensor,
                 v2: torch.Tensor) -> torch.Tensor:
        # x [B, S, W] float32, updated in place; modulation [B, 6, W] float32
        shift, scale, gate, c_shift, c_scale, c_gate = (self.table + modulation).chunk(6, dim=1)  # [B, 1, W]
        h = ops.modulated_rms(x, *self.norm1, scale, shift, self.dtype)  # [B, S, W] in the products' dtype
        q, k, v = self.qkv(h).split([self.heads * self.head_dim, *2 * [self.kv_heads * self.head_dim]], dim=-1)
        q, k, v = self._heads(q, self.heads), self._heads(k, self.kv_heads), self._heads(v, self.kv_heads)
        q, k = _norm_rotate(q, self.norm_q1, rotary), _norm_rotate(k, self.norm_k1, rotary)
        ops.gated_add(x, self.out1(ops.attention(q, k, v, self.window)), gate)  # attention: [B, S, H * D]

        q = self._heads(self.q2(ops.modulated_rms(x, *self.norm2, dtype=self.dtype)), self.heads)
        ops.gated_add(x, self.out2(ops.attention(_norm_rotate(q, self.norm_q2, None), k2, v2)))

        h = ops.modulated_rms(x, *self.norm3, c_scale, c_shift, self.dtype)
        hidden, up = self.gate_up(h).chunk(2, dim=-1)
        return ops.gated_add(x, self.down(F.silu(hidden) * up), c_gate)


class DiTCPU(CPUTransformer):
    """diffusers' AceStepTransformer1DModel for the CPU (see the module's docstring), called as it is
    called. It takes and returns float32 (callers cast their inputs to model.dtype: the timesteps keep
    their precision); the products run in compute_dtype."""

    def __init__(self, transformer: nn.Module, dtype: torch.dtype = torch.bfloat16, quantize: str | None = None,
                 consume: bool = False):
        super().__init__()
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize must be None or 'int8', not {quantize!r}")
        t = transformer
        self.config, self.compute_dtype, self.quantize = t.config, dtype, quantize
        self.patch, self.head_dim, self.theta = t.patch_size, t.head_dim, t.rope_theta
        for name in ("time_embed", "time_embed_r", "proj_in_conv", "condition_embedder", "proj_out_conv"):
            setattr(self, name, _float(getattr(t, name)))
        width = t.norm_out.weight.shape[0]
        self.norm_out = _rms(t.norm_out, width)
        self.table = t.scale_shift_table.detach().float()  # [1, 2, W]
        windows = [t.config.sliding_window if kind == "sliding_attention" else None for kind in t.layer_types]
        self.blocks, self.windows = [], windows
        for i, window in enumerate(windows):
            self.blocks.append(_Block(t.layers[i], window, dtype, quantize))
            if consume:  # drop the layer's weights now: the peak is the module + one layer, not + all
                t.layers[i] = nn.Identity()
        self._rotary_of = None  # (length, (cos, sin))

    def project_context(self, states: torch.Tensor) -> torch.Tensor:
        return self.condition_embedder(states)  # [B, S_c, W]

    def rebuild(self, base: nn.Module, values: dict[str, torch.Tensor]):
        """The blocks of the layers `values` names made again from the diffusers DiT `base` (float32, kept
        unchanged) with those weights (name -> float32 [out, in], e.g. "layers.3.self_attn.to_q.weight"),
        rounded to bfloat16 as the CPU path reads its DiT: a LoRA set swapped (lora_swap.py), each block from
        the float32 weights, never from its own rounded ones."""
        layers: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in values.items():
            head, index, rest = name.split(".", 2)
            if head != "layers":
                raise ValueError(f"ACE-Step DiT weight {name} is no block's")
            layers.setdefault(int(index), {})[rest] = value
        for i, weights in layers.items():
            layer = copy.deepcopy(base.layers[i])  # one layer's float32 copy at a time
            own = layer.state_dict(keep_vars=True)
            with torch.no_grad():
                for rest, value in weights.items():
                    own[rest].copy_(value)
            layer.to(torch.bfloat16)
            self.blocks[i] = _Block(layer, self.windows[i], self.compute_dtype, self.quantize)
        self._context_of = None  # cross-attention keys and values of the old weights

    def _rotary(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) [length, head_dim] float32: Qwen3's layout (two equal halves), as diffusers."""
        from diffusers.models.embeddings import get_1d_rotary_pos_embed

        if self._rotary_of is None or self._rotary_of[0] != length:
            positions = torch.arange(length, dtype=torch.float32)
            self._rotary_of = (length, get_1d_rotary_pos_embed(self.head_dim, positions, theta=self.theta,
                                                               use_real=True, repeat_interleave_real=False))
        return self._rotary_of[1]

    @torch.inference_mode()
    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, timestep_r: torch.Tensor,
                encoder_hidden_states: torch.Tensor, context_latents: torch.Tensor, attention_kwargs: dict | None = None,
                return_dict: bool = True):
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        if attention_kwargs:
            raise ValueError("DiTCPU takes no attention_kwargs (LoRA scales)")
        t, r = timestep.float(), timestep_r.float()
        temb_t, modulation_t = self.time_embed(t)  # [B, W], [B, 6, W]
        temb_r, modulation_r = self.time_embed_r(t - r)
        temb, modulation = temb_t + temb_r, modulation_t + modulation_r

        x = torch.cat([context_latents.float(), hidden_states.float()], dim=-1)  # [B, T, C_context + C]
        frames = x.shape[1]
        x = F.pad(x, (0, 0, 0, -frames % self.patch))  # to whole patches
        x = self.proj_in_conv(x.transpose(1, 2)).transpose(1, 2).contiguous()  # [B, S, W], S = T / patch
        kv = self.context(encoder_hidden_states)
        rotary = self._rotary(x.shape[1])
        for block, (k2, v2) in zip(self.blocks, kv):
            x = block(x, modulation, rotary, k2, v2)

        shift, scale = (self.table + temb.unsqueeze(1)).chunk(2, dim=1)  # [B, 1, W]
        x = ops.modulated_rms(x, *self.norm_out, scale, shift, torch.float32)
        sample = self.proj_out_conv(x.transpose(1, 2)).transpose(1, 2)[:, :frames]  # [B, T, C]
        return Transformer2DModelOutput(sample=sample) if return_dict else (sample,)


def prepare_dit(transformer: nn.Module, dtype: torch.dtype = torch.bfloat16, quantize: str | None = None,
                consume: bool = False) -> DiTCPU:
    """The CPU form of a loaded AceStepTransformer1DModel (see DiTCPU), its products in `dtype`
    (bfloat16 or float32) or, quantize="int8", dynamic int8. consume: the transformer's layers are
    dropped as they are copied (it cannot run afterwards); else it is left whole."""
    return DiTCPU(transformer, dtype, quantize, consume).eval()


def for_cpu(parts: AceStepParts, dtype: torch.dtype = torch.bfloat16, quantize: str | None = None) -> AceStepParts:
    """Parts loaded on the CPU (the encoders and the VAE float32, the DiT float32 or bfloat16) -> the CPU
    path: the DiT as DiTCPU (products in `dtype`, the residual stream, norms and modulation
    float32), the text and condition encoders float32 (they run once a song), the VAE decoder as the
    OobleckDecoderCPU of diffusion/oobleck.py in `dtype` (the VAE module stays, for its receptive field);
    quantize="int8": both with int8 products instead. The diffusers DiT's layers are dropped as they are
    copied (the peak is the module and one layer)."""
    parts.transformer = prepare_dit(parts.transformer, dtype, quantize, consume=True)
    parts.decoder = OobleckDecoderCPU(parts.vae.decoder, dtype, quantize=quantize)
    return parts
