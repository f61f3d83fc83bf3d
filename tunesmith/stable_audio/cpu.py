"""Stable Audio Open on the CPU: the speed levers, applied to the loaded diffusers modules.

The CUDA path runs diffusers' modules as they are (half precision); none of this is used there.
for_cpu(parts, dtype, quantize) swaps the DiT and the VAE decoder of loaded parts for these.

    text encoder   float32, over the prompt's own tokens only (sample.encode_text, on every device)
    DiT            prepare_dit(transformer, dtype, quantize) -> DiTCPU, called as the transformer:
                   bfloat16 products (or dynamic int8), a float32 residual stream and float32
                   small parts, q/k/v in one product, cross-attention keys and values once per
                   prompt, attention and q/k norm + rotary in C
    VAE decode     OobleckDecoderCPU(vae.decoder, dtype, quantize)(latents, length=None) (diffusion/oobleck.py,
                   shared with ACE-Step): the decoder tile by tile along time (exact seams), every
                   intermediate in the cache; bfloat16 convolutions with float32 sums (or int8
                   products) and a float32 residual stream; Snake, residual adds and the upsampling's phase interleave one
                   pass each in C

DEFAULT_DTYPES holds the defaults; BENCHMARKS.md has what each lever gains and how far it moves
the output from float32 (benchmarks/stable_audio_cpu.py measures both). The C kernels
(diffusion/kernels.c, through diffusion/ops.py) are built at first use; without a compiler, torch's ops do
the same work, slower.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion import ops
from ..diffusion.dit import CPUTransformer
from ..diffusion.oobleck import OobleckDecoderCPU
from .parts import StableAudioParts

# The dtypes the CPU path defaults to (BENCHMARKS.md: speed and distance from float32).
DEFAULT_DTYPES = {"text_encoder": torch.float32, "transformer": torch.bfloat16, "vae": torch.bfloat16}


# ------------------------------------------------------------------------------------------------- DiT

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
        self.qkv = ops.Linear(torch.cat([a1.to_q.weight, a1.to_k.weight, a1.to_v.weight]), None, dtype, quantize)
        self.out1 = ops.Linear(a1.to_out[0].weight, a1.to_out[0].bias, dtype, quantize)
        self.norm_q1, self.norm_k1 = _norm(a1.norm_q), _norm(a1.norm_k)
        self.q2 = ops.Linear(a2.to_q.weight, None, dtype, quantize)
        self.kv2 = ops.Linear(torch.cat([a2.to_k.weight, a2.to_v.weight]), None, dtype, None)  # once per prompt
        self.out2 = ops.Linear(a2.to_out[0].weight, a2.to_out[0].bias, dtype, quantize)
        self.norm_q2, self.norm_k2 = _norm(a2.norm_q), _norm(a2.norm_k)
        swiglu, out = block.ff.net[0], block.ff.net[2]
        self.ff_in = ops.Linear(swiglu.proj.weight, swiglu.proj.bias, dtype, quantize)
        self.ff_out = ops.Linear(out.weight, out.bias, dtype, quantize)

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        B, S, _ = x.shape
        return x.view(B, S, heads, self.head_dim).transpose(1, 2)  # (B, heads, S, head_dim)

    def _qk_norm(self, x: torch.Tensor, norm: tuple | None) -> torch.Tensor:
        return x if norm is None else _layer_norm(x, norm).to(self.dtype)

    def _norm_rotate(self, x: torch.Tensor, norm: tuple | None, rotary: tuple | None) -> torch.Tensor:
        """q or k (B, heads, S, head_dim): the per-head LayerNorm, then rotary (self-attention), as
        diffusers' processor applies them; in bfloat16 one pass of diffusion/kernels.c, in place (x is a
        view of this block's own projection output)."""
        if norm is None and rotary is None:
            return x
        _, weight, bias, eps = norm if norm is not None else (None, None, None, 0.0)
        if ops.norm_rotate(x, None if norm is None else "layer", weight, bias, eps, rotary):
            return x
        x = self._qk_norm(x, norm)
        return x if rotary is None else _rotate(x, rotary)

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
        x = x + self.out1(ops.attention(q, k, v))  # attention: [B, S, D]

        q = self._heads(self.q2(_layer_norm(x, self.norm2).to(self.dtype)), self.heads)
        x = x + self.out2(ops.attention(self._norm_rotate(q, self.norm_q2, None), k2, v2))

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


class DiTCPU(CPUTransformer):
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

    def project_context(self, states: torch.Tensor) -> torch.Tensor:
        return self.cross_attention_proj(states)  # [B, T, D_c]

    @torch.inference_mode()
    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor = None,
                encoder_hidden_states: torch.Tensor = None, global_hidden_states: torch.Tensor = None,
                rotary_embedding=None, return_dict: bool = True, attention_mask=None, encoder_attention_mask=None):
        from diffusers.models.modeling_outputs import Transformer2DModelOutput

        if attention_mask is not None or encoder_attention_mask is not None:
            raise ValueError("DiTCPU takes no attention masks")
        x = hidden_states.float()  # [B, C, T]
        kv = self.context(encoder_hidden_states)
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
