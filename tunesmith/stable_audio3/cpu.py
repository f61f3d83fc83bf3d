"""Stable Audio 3 on the CPU: the speed levers, applied to the loaded diffusers / tunesmith modules.

for_cpu(parts, dtype, quantize) swaps the DiT for DiTCPU and the SAME decoder's transformer layers for
SameLayerMixed; the text encoder, the seconds embedder and the SAME encoder stay as loaded (float32). The
mixed SAME layers also decode in half precision on a GPU (mixed_layers, model._decoder_layers).

    DiT     products in `dtype` (bfloat16 where the CPU computes it natively) or int8 (quantize="int8":
            weights per output row, plain round-to-nearest, as Stability found best for this DiT), around
            a float32 residual stream; RMSNorms, AdaLN modulation, gates, the time and global embeddings
            and RoPE angles in float32 (bfloat16 angles break every token past about 20 s); q/k/v in
            one product; cross-attention keys and values once per prompt, the repaint condition's
            per-block embedding once per clip.
    SAME    decoded in windows (decode.py) as before; each transformer layer's products in `dtype`,
            with float32 islands around attention: DyT norms, q/k norms, RoPE, both softmaxes of the
            differential attention and their difference (in half precision the two nearly equal maps
            cancel: Stability measured 12 dB lost in SAME-S with int8 attention). prepare_decoder can put
            three of each layer's products in int8; for_cpu does not: on AVX2 it was no faster and 26 dB
            (SAME-S) / 5 dB (SAME-L) from float32 at the real sizes (BENCHMARKS.md: int8 SAME decoders).

Which dtype and quantize pay depends on the CPU (BENCHMARKS.md, benchmarks/stable_audio3_cpu.py): on
AVX512-BF16 CPUs bfloat16 products run at 5x float32; on AVX2 CPUs bfloat16 runs far below float32 and
int8 goes through torch's x86 quantized engine (cpu_int8.PackedInt8Linear).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..diffusion import ops
from ..diffusion.dit import CPUTransformer
from .parts import ROPE_BASE, StableAudio3Parts


# ------------------------------------------------------------------------------------------------- DiT

def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    B, S, W = x.shape
    return x.view(B, S, heads, W // heads).transpose(1, 2)  # (B, heads, S, head_dim)


def rotate(x: torch.Tensor, rotary: tuple) -> torch.Tensor:
    """diffusers' partial RoPE on the first rot channels of each head of x (B, heads, S, head_dim), in
    float32: rot = cat(-x2, x1) of the halves, x * cos + rot * sin."""
    cos, sin = rotary  # [S, rot] float32
    rot = cos.shape[-1]
    head, tail = x[..., :rot].float(), x[..., rot:]
    first, second = head.unflatten(-1, (2, -1)).unbind(-2)
    turned = torch.cat([-second, first], dim=-1)
    return torch.cat([(head * cos + turned * sin).to(x.dtype), tail], dim=-1)


def rotary_angles(length: int, rot: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) [length, rot] float32 of StableAudio3RotaryEmbedding(rot): positions and angles in float32."""
    inv_freq = 1.0 / (ROPE_BASE ** (torch.arange(0, rot, 2).float() / rot))
    freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    angles = torch.cat([freqs, freqs], dim=-1)
    return angles.cos(), angles.sin()


# a block's linears -> the product of _Block made from each, and whether it may be int8 (the cross-attention's
# keys and values are computed once per prompt: in the compute dtype)
PRODUCTS = {"self_attn.to_qkv": ("qkv", True), "self_attn.to_out": ("out1", True), "cross_attn.to_q": ("q_cross", True),
            "cross_attn.to_kv": ("kv_cross", False), "cross_attn.to_out": ("out2", True),
            "ff.proj_in": ("ff_in", True), "ff.proj_out": ("ff_out", True)}
LOCAL = "to_local_embed."  # a block's repaint-condition embedder: run as it is, in float32


class _Block:
    """One StableAudio3DiTBlock: AdaLN self-attention (RMS q/k norm, partial RoPE), plain-RMS
    cross-attention, the repaint condition added, AdaLN SwiGLU feed-forward; plain or differential."""

    def __init__(self, block: nn.Module, dtype: torch.dtype, quantize: str | None):
        a, c = block.self_attn, block.cross_attn
        self.heads, self.dtype, self.quantize, self.differential = a.heads, dtype, quantize, a.use_differential
        self.eps = block.pre_norm.eps
        self.pre, self.cross_norm, self.ff_norm = (n.gamma.detach().float() for n in
                                                   (block.pre_norm, block.cross_attend_norm, block.ff_norm))
        self.q1, self.k1 = a.q_norm.gamma.detach().float(), a.k_norm.gamma.detach().float()
        self.q2, self.k2 = c.q_norm.gamma.detach().float(), c.k_norm.gamma.detach().float()
        for layer in PRODUCTS:  # qkv, out1, q_cross, kv_cross, out2, ff_in, ff_out
            module = block.get_submodule(layer)
            self.remake(layer, module.weight, module.bias)
        self.modulation = block.to_scale_shift_gate.detach().float()  # [6 D]
        self.local = block.to_local_embed.float()

    def remake(self, layer: str, weight: torch.Tensor, bias: torch.Tensor | None):
        """The product of one of the block's linears (a PRODUCTS name) made from its float32 weight."""
        name, int8 = PRODUCTS[layer]
        setattr(self, name, ops.int8_or(weight, bias, self.dtype, self.quantize) if int8 else
                ops.Linear(weight, bias, self.dtype, None))

    def _norm(self, x: torch.Tensor, gamma: torch.Tensor, rotary: tuple | None) -> torch.Tensor:
        """Per-head RMSNorm (float32 inside), then RoPE, on q or k (B, heads, S, head_dim)."""
        if ops.norm_rotate(x, "rms", gamma, None, self.eps, rotary):  # bfloat16: one pass in C, in place
            return x
        y = F.rms_norm(x.float(), gamma.shape, gamma, self.eps)
        return (y if rotary is None else rotate(y, rotary)).to(self.dtype)

    def _attend(self, qs, ks, v) -> torch.Tensor:
        """softmax(q k^T) v, or the differential difference of two maps -> [B, S, H * D]."""
        out = ops.attention(qs[0], ks[0], v)
        return out - ops.attention(qs[1], ks[1], v) if self.differential else out

    def context(self, projected: torch.Tensor) -> tuple:
        """Cross-attention keys (normed) and values of the projected context [B, T, D]."""
        parts = self.kv_cross(projected.to(self.dtype)).chunk(3 if self.differential else 2, dim=-1)
        ks = tuple(self._norm(_heads(k, self.heads).contiguous(), self.k2, None).contiguous() for k in parts[:-1])
        return ks, _heads(parts[-1], self.heads).contiguous()

    def __call__(self, x: torch.Tensor, modulation: torch.Tensor, rotary: tuple, kv: tuple,
                 local: torch.Tensor | None, memory: int) -> torch.Tensor:
        # x [B, S, D] float32, modulation [B, 6 D] float32
        mod = (self.modulation + modulation).unsqueeze(1)  # [B, 1, 6 D]
        scale1, shift1, gate1, scale2, shift2, gate2 = (m.contiguous() for m in mod.chunk(6, dim=-1))
        h = ops.modulated_rms(x, self.pre, self.eps, scale1, shift1, self.dtype)
        parts = [_heads(p, self.heads) for p in self.qkv(h).to(self.dtype).chunk(5 if self.differential else 3, -1)]
        n = 2 if self.differential else 1
        qs = [self._norm(q, self.q1, rotary) for q in parts[:n]]
        ks = [self._norm(k, self.k1, rotary) for k in parts[n:2 * n]]
        ops.gated_add(x, self.out1(self._attend(qs, ks, parts[-1]).to(self.dtype)), torch.sigmoid(1 - gate1))

        ks, v = kv
        h = ops.modulated_rms(x, self.cross_norm, self.eps, dtype=self.dtype)
        qs = [self._norm(_heads(q, self.heads), self.q2, None) for q in self.q_cross(h).to(self.dtype).chunk(n, -1)]
        ops.gated_add(x, self.out2(self._attend(qs, ks, v).to(self.dtype)).contiguous())
        if local is not None:
            x[:, memory:] += local  # the repaint condition, on the audio positions

        h = ops.modulated_rms(x, self.ff_norm, self.eps, scale2, shift2, self.dtype)
        hidden, gate = self.ff_in(h).chunk(2, dim=-1)
        return ops.gated_add(x, self.ff_out((hidden * F.silu(gate)).to(self.dtype)).contiguous(),
                             torch.sigmoid(1 - gate2))


def kept_float32(name: str) -> bool:
    """Whether the CPU DiT runs this linear of the diffusers DiT (its module name) as it is, in float32 (the
    DiT's parts outside its blocks, a block's repaint embedder), rather than a product made from it. Any other
    name is refused: an adapter's layer the CPU DiT would not hold."""
    head, _, rest = name.partition(".")
    if head in DiTCPU.FLOAT32:
        return True
    if head == "transformer_blocks":
        layer = rest.partition(".")[2]
        if layer.startswith(LOCAL):
            return True
        if layer in PRODUCTS:
            return False
    raise ValueError(f"Stable Audio 3 DiT layer {name} is none the CPU DiT holds")


class DiTCPU(CPUTransformer):
    """diffusers' StableAudio3DiTModel for the CPU, called as it is called (same arguments, same output)
    and computing the same function, its products in `dtype` or int8 (see the module's docstring)."""

    # the DiT's parts outside its blocks, run as they are in float32 (the original's modules)
    FLOAT32 = ("timestep_features", "to_timestep_embed", "to_cond_embed", "to_global_embed", "global_cond_embedder",
               "preprocess_conv", "postprocess_conv", "proj_in", "proj_out")

    def __init__(self, transformer: nn.Module, dtype: torch.dtype = torch.bfloat16, quantize: str | None = None):
        super().__init__()
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize must be None or 'int8', not {quantize!r}")
        t = transformer
        if t.config.patch_size != 1:
            raise ValueError("the CPU DiT takes Stable Audio 3's patch size 1 only")
        self.config, self.compute_dtype, self.quantize = t.config, dtype, quantize
        for name in self.FLOAT32:
            setattr(self, name, getattr(t, name).float())
        self.padding = t.prompt_padding_embedding.detach().float()
        self.memory = t.memory_tokens.detach().float() if t.config.num_memory_tokens > 0 else None
        self.rot = 2 * t.rotary_pos_emb.inv_freq.numel()
        self.blocks = [_Block(b, dtype, quantize) for b in t.transformer_blocks]
        self._rotary = None  # (length, (cos, sin))
        self._local_of = None  # (local condition, [its embedding per block])

    def rebuild(self, base: nn.Module, weights: dict[str, torch.Tensor]):
        """The layers `weights` names (diffusers' module name -> float32 weight, e.g.
        "transformer_blocks.1.self_attn.to_qkv") made again from those float32 weights, as a DiT loaded with
        them is made: a block's products rounded or quantized again from them (biases from `base`, the DiT
        this one was made from); the layers run as they are in float32 (kept_float32) take them in place. A
        LoRA set swapped (lora_swap.py), never from a rounded or quantized copy."""
        with torch.no_grad():
            for name, value in weights.items():
                if not kept_float32(name):
                    _, index, layer = name.split(".", 2)
                    self.blocks[int(index)].remake(layer, value, base.get_submodule(name).bias)
                elif name.startswith("transformer_blocks."):
                    _, index, layer = name.split(".", 2)
                    self.blocks[int(index)].local.get_submodule(layer.removeprefix(LOCAL)).weight.copy_(value)
                else:
                    self.get_submodule(name).weight.copy_(value)
        self._context_of = self._local_of = None  # cross-attention keys and repaint embeddings of the old weights

    def project_context(self, states: torch.Tensor) -> torch.Tensor:
        return self.to_cond_embed(states)  # [B, T, D]

    def rotary(self, length: int) -> tuple:
        if self._rotary is None or self._rotary[0] != length:
            self._rotary = (length, rotary_angles(length, self.rot))
        return self._rotary[1]

    def local(self, local_add_cond: torch.Tensor | None) -> list:
        """Each block's embedding of the repaint condition [B, 1 + C, L] (the same every step: kept)."""
        if local_add_cond is None:
            return [None] * len(self.blocks)
        cond = local_add_cond.float()
        cached = self._local_of
        if cached is not None and cached[0].shape == cond.shape and torch.equal(cached[0], cond):
            return cached[1]
        seq = cond.transpose(1, 2)  # [B, L, 1 + C]
        embedded = [block.local(seq) for block in self.blocks]
        self._local_of = (cond.clone(), embedded)
        return embedded

    @torch.inference_mode()
    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                global_hidden_states: torch.Tensor, encoder_attention_mask: torch.Tensor | None = None,
                local_add_cond: torch.Tensor | None = None, return_dict: bool = True):
        from diffusers.models.transformers.transformer_stable_audio3 import StableAudio3DiTModelOutput

        states = encoder_hidden_states.float()
        if encoder_attention_mask is not None:  # padded tokens read the learned padding embedding
            states = torch.where(encoder_attention_mask.bool().unsqueeze(-1), states, self.padding)
        kv = self.context(states)
        B = hidden_states.shape[0]
        time = self.to_timestep_embed(self.timestep_features(timestep.float()[:, None]))  # [B, D]
        modulation = self.global_cond_embedder(self.to_global_embed(global_hidden_states.float()) + time)  # [B, 6 D]
        x = hidden_states.float()  # [B, C, L]
        x = self.proj_in((self.preprocess_conv(x) + x).transpose(1, 2))  # [B, L, D]
        memory = 0
        if self.memory is not None:
            memory = self.memory.shape[0]
            x = torch.cat([self.memory.expand(B, -1, -1), x], dim=1)  # [B, M + L, D]
        x = x.contiguous()
        rotary = self.rotary(x.shape[1])
        for block, pair, local in zip(self.blocks, kv, self.local(local_add_cond)):
            x = block(x, modulation, rotary, pair, local, memory)
        out = self.proj_out(x[:, memory:]).transpose(1, 2)  # [B, C, L]
        sample = self.postprocess_conv(out) + out
        return StableAudio3DiTModelOutput(sample=sample) if return_dict else (sample,)


# ------------------------------------------------------------------------------------------------ SAME

def _dyt(norm: nn.Module) -> tuple:
    return norm.alpha.detach().float(), norm.gamma.detach().float(), norm.beta.detach().float()


def _apply_dyt(x: torch.Tensor, dyt: tuple) -> torch.Tensor:
    alpha, gamma, beta = dyt
    return gamma * torch.tanh(alpha * x) + beta  # float32


class SameLayerMixed(nn.Module):
    """diffusers' SAME TransformerBlock (DyT norms, differential attention with DyT q/k norms and RoPE,
    a GLU feed-forward): its four products in `dtype`, or the first three in int8 (quantize="int8"),
    everything around attention in float32."""

    def __init__(self, block: nn.Module, dtype: torch.dtype, quantize: str | None = None, band: int | None = None):
        super().__init__()
        if quantize not in (None, "int8"):
            raise ValueError(f"quantize must be None or 'int8', not {quantize!r}")
        a = block.attn
        self.dtype, self.heads, self.differential = dtype, a.heads, a.use_differential
        self.band = band  # SAME-L: its band mask's half-width in tokens, attended as a band (banded_attention)
        self.norm_attn, self.norm_ff = _dyt(block.norm_attn), _dyt(block.norm_ff)
        self.q_norm, self.k_norm = _dyt(a.q_norm), _dyt(a.k_norm)
        self.rot = 2 * a.rope.inv_freq.numel()
        self.qkv = ops.int8_or(a.to_qkv.weight, None, dtype, quantize)
        self.out = ops.int8_or(a.to_out.weight, None, dtype, quantize)
        self.ff_in = ops.int8_or(block.ff.proj_in.weight, block.ff.proj_in.bias, dtype, quantize)
        # its input, the gated product hidden * gate, is heavy-tailed: in int8 with one activation scale per
        # call (AVX2's engine) a SAME-S-sized layer's update came 22 dB from float32's, 33 dB with it in `dtype`
        self.ff_out = ops.Linear(block.ff.proj_out.weight, block.ff.proj_out.bias, dtype, None)
        self.sinusoidal = block.ff.sinusoidal
        self._rotary = None

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        # x [N, T, D] float32 (N chunks of T tokens, or whole sequences with a band mask)
        N, T, _ = x.shape
        if self._rotary is None or self._rotary[0] != (T, x.device):
            self._rotary = ((T, x.device), tuple(a.to(x.device) for a in rotary_angles(T, self.rot)))
        rotary = self._rotary[1]
        h = _apply_dyt(x, self.norm_attn).to(self.dtype)
        parts = [_heads(p.float(), self.heads) for p in self.qkv(h).chunk(5 if self.differential else 3, dim=-1)]
        n = 2 if self.differential else 1
        qs = [rotate(_apply_dyt(q, self.q_norm), rotary) for q in parts[:n]]
        ks = [rotate(_apply_dyt(k, self.k_norm), rotary) for k in parts[n:2 * n]]
        v = parts[-1]
        if attn_mask is not None and self.band is not None:  # diffusers' band mask, computed as a band
            def attend(q, k):
                return banded_attention(q, k, v, self.band)
        else:
            mask = None if attn_mask is None else attn_mask.float()

            def attend(q, k):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = attend(qs[0], ks[0])  # float32: the island
        if self.differential:
            out = out - attend(qs[1], ks[1])
        x = x + self.out(out.transpose(1, 2).reshape(N, T, -1).to(self.dtype)).float()
        hidden, gate = self.ff_in(_apply_dyt(x, self.norm_ff).to(self.dtype)).float().chunk(2, dim=-1)
        gate = torch.sin(math.pi * gate) if self.sinusoidal else F.silu(gate)
        return x + self.ff_out((hidden * gate).to(self.dtype)).float()


def banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: int) -> torch.Tensor:
    """Attention of each position to those within w of it (diffusers' _band_mask for SAME-L), exactly, in
    blocks of 2w queries against the 4w keys around them: O(T w) where the dense mask costs O(T^2) (a 12 s
    window of SAME-L: 2618 tokens, each attending to 35; one layer's attention 0.70 -> 0.035 s on 2 AVX2
    cores). Two plain products: SDPA over so many small blocks ran 10x slower.  q, k, v [B, H, T, d] -> same."""
    B, H, T, d = q.shape
    b = 2 * w  # queries a block
    n = -(-T // b)
    pad = n * b - T
    queries = F.pad(q, (0, 0, 0, pad)).reshape(B * H, n, b, d)
    keys_t, values_t = (F.pad(x, (0, 0, w, pad + w)).reshape(B * H, -1, d).unfold(1, b + 2 * w, b)
                        for x in (k, v))  # [BH, n, d, b + 2w]: each block's keys, transposed
    query = torch.arange(n * b, device=q.device).view(n, b, 1)  # positions [n, b, 1]
    key = (torch.arange(n, device=q.device) * b - w).view(n, 1, 1) + torch.arange(b + 2 * w, device=q.device)
    keep = ((key - query).abs() <= w) & (key >= 0) & (key < T)  # [n, b, b + 2w]
    mask = torch.zeros(keep.shape, dtype=q.dtype, device=q.device).masked_fill(~keep, float("-inf"))
    weights = (torch.matmul(queries, keys_t) * d ** -0.5 + mask).softmax(-1)  # [BH, n, b, b + 2w]
    out = torch.matmul(weights, values_t.transpose(-1, -2))  # [BH, n, b, d]
    return out.reshape(B, H, n * b, d)[:, :, :T]


def decoder_blocks(vae: nn.Module) -> list[nn.Module]:
    """The decoder's resampling blocks (each with .transformers): tunesmith's SAME-S or diffusers' SAME-L."""
    block = getattr(vae, "decoder_block", None)
    return [block] if block is not None else list(vae.decoder.blocks)


def mixed_layers(vae: nn.Module, dtype: torch.dtype, quantize: str | None = None) -> list[nn.ModuleList]:
    """Each decoder block's transformer layers as SameLayerMixed in `dtype` (quantize="int8": q/k/v, the
    attention's output and the feed-forward's input products in int8, per output row as the DiT's;
    attention, norms and the feed-forward's output product stay in float32 / `dtype`), on the layers' device."""
    return [nn.ModuleList([SameLayerMixed(layer, dtype, quantize, band_of(block)) for layer in block.transformers])
            for block in decoder_blocks(vae)]


def band_of(block: nn.Module) -> int | None:
    """A SAME-L block's band half-width in tokens (diffusers: sliding_window latents of stride + 1 tokens);
    None for SAME-S, which attends within chunks, unmasked."""
    window = getattr(block, "sliding_window", None)
    return None if window is None else window * (block.stride + 1)


def prepare_decoder(vae: nn.Module, dtype: torch.dtype, quantize: str | None = None) -> nn.Module:
    """The SAME decoder's transformer layers swapped, in place, for their mixed_layers."""
    for block, layers in zip(decoder_blocks(vae), mixed_layers(vae, dtype, quantize)):
        block.transformers = layers
    return vae


def for_cpu(parts: StableAudio3Parts, dtype: torch.dtype, quantize: str | None = None) -> StableAudio3Parts:
    """Parts loaded in float32 on the CPU, with the DiT and the SAME decoder in their CPU forms (the
    original DiT can be dropped: the CPU form holds copies of what it needs)."""
    parts.transformer = DiTCPU(parts.transformer, dtype, quantize).eval()
    prepare_decoder(parts.vae, dtype)
    return parts
