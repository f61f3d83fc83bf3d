"""model.safetensors of the stable-audio-tools layout -> the state dict of our diffusers parts.

One explicit map: every target tensor names its checkpoint key (and, for fused projections, which
chunk of it), every checkpoint key must be used, every shape is checked. Targets are named inside
one container, nn.ModuleDict(transformer=DiT, vae=VAE, seconds=ModuleDict, text_projection=Linear).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from .tools_config import DiTSizes, ToolsConfig, VAESizes

DIT, VAE, COND = "model.model.", "pretransform.model.", "conditioner.conditioners."
ROTARY_KEY = DIT + "transformer.rotary_pos_emb.inv_freq"  # a buffer derived from the config: checked, not loaded


@dataclass(frozen=True)
class Source:
    key: str  # checkpoint key
    part: int = 0  # this chunk of `parts` equal chunks along dim 0 (fused q/k/v projections)
    parts: int = 1


def tools_key_map(cfg: ToolsConfig, text_projection: bool) -> dict[str, Source]:
    """Container key -> its source in the checkpoint."""
    m = _dit_map(cfg.dit) | _vae_map(cfg.vae)
    for cid in cfg.numbers:  # diffusers' StableAudioNumberConditioner == stable-audio-tools' NumberEmbedder
        src = f"{COND}{cid}.embedder.embedding."
        dst = f"seconds.{cid}.time_positional_embedding."
        m |= {dst + "0.weights": Source(src + "0.weights"), dst + "1.weight": Source(src + "1.weight"),
              dst + "1.bias": Source(src + "1.bias")}
    if text_projection:
        m |= {f"text_projection.{p}": Source(f"{COND}{cfg.prompt_id}.proj_out.{p}") for p in ("weight", "bias")}
    return m


def _dit_map(d: DiTSizes) -> dict[str, Source]:
    m = {}

    def one(ours: str, theirs: str):
        m["transformer." + ours] = Source(DIT + theirs)

    one("time_proj.weight", "timestep_features.weight")  # [128, 1] there, [128] here
    for i in (0, 2):  # Linear, SiLU, Linear
        one(f"timestep_proj.{i}.weight", f"to_timestep_embed.{i}.weight")
        one(f"timestep_proj.{i}.bias", f"to_timestep_embed.{i}.bias")
        one(f"cross_attention_proj.{i}.weight", f"to_cond_embed.{i}.weight")
        one(f"global_proj.{i}.weight", f"to_global_embed.{i}.weight")
    for conv in ("preprocess_conv", "postprocess_conv"):
        one(f"{conv}.weight", f"{conv}.weight")
    one("proj_in.weight", "transformer.project_in.weight")
    one("proj_out.weight", "transformer.project_out.weight")
    for i in range(d.depth):
        ours, theirs = f"transformer_blocks.{i}.", f"transformer.layers.{i}."
        for norm, their_norm in (("norm1", "pre_norm"), ("norm2", "cross_attend_norm"), ("norm3", "ff_norm")):
            one(ours + norm + ".weight", theirs + their_norm + ".gamma")
            one(ours + norm + ".bias", theirs + their_norm + ".beta")  # a zero buffer there
        for j, name in enumerate("qkv"):
            m[f"transformer.{ours}attn1.to_{name}.weight"] = Source(DIT + theirs + "self_attn.to_qkv.weight", j, 3)
        for j, name in enumerate("kv"):
            m[f"transformer.{ours}attn2.to_{name}.weight"] = Source(DIT + theirs + "cross_attn.to_kv.weight", j, 2)
        one(ours + "attn2.to_q.weight", theirs + "cross_attn.to_q.weight")
        for attn, their_attn in (("attn1", "self_attn"), ("attn2", "cross_attn")):
            one(f"{ours}{attn}.to_out.0.weight", f"{theirs}{their_attn}.to_out.weight")
            if d.qk_norm:
                for qk in "qk":
                    one(f"{ours}{attn}.norm_{qk}.weight", f"{theirs}{their_attn}.{qk}_norm.weight")
                    one(f"{ours}{attn}.norm_{qk}.bias", f"{theirs}{their_attn}.{qk}_norm.bias")
        for p in ("weight", "bias"):  # GLU in (both halves in one Linear), Linear out
            one(f"{ours}ff.net.0.proj.{p}", f"{theirs}ff.ff.0.proj.{p}")
            one(f"{ours}ff.net.2.{p}", f"{theirs}ff.ff.2.{p}")
    return m


def _vae_map(v: VAESizes) -> dict[str, Source]:
    """Oobleck: stable-audio-tools' nn.Sequential indices -> diffusers' names (weight-normed convs)."""
    m = {}
    n = len(v.strides)

    def conv(ours: str, theirs: str, bias: bool = True):
        for p in ("weight_g", "weight_v") + (("bias",) if bias else ()):
            m[f"vae.{ours}.{p}"] = Source(f"{VAE}{theirs}.{p}")

    def snake(ours: str, theirs: str):  # [C] there, [1, C, 1] here
        for p in ("alpha", "beta"):
            m[f"vae.{ours}.{p}"] = Source(f"{VAE}{theirs}.{p}")

    def res_unit(ours: str, theirs: str):  # snake, conv k7 dilated, snake, conv k1
        snake(ours + ".snake1", theirs + ".layers.0")
        conv(ours + ".conv1", theirs + ".layers.1")
        snake(ours + ".snake2", theirs + ".layers.2")
        conv(ours + ".conv2", theirs + ".layers.3")

    enc, dec = "encoder.layers", "decoder.layers"
    conv("encoder.conv1", f"{enc}.0")
    for i in range(n):  # encoder block: 3 residual units, snake, strided conv
        ours, theirs = f"encoder.block.{i}", f"{enc}.{i + 1}.layers"
        for u in range(3):
            res_unit(f"{ours}.res_unit{u + 1}", f"{theirs}.{u}")
        snake(f"{ours}.snake1", f"{theirs}.3")
        conv(f"{ours}.conv1", f"{theirs}.4")
    snake("encoder.snake1", f"{enc}.{n + 1}")
    conv("encoder.conv2", f"{enc}.{n + 2}")
    conv("decoder.conv1", f"{dec}.0")
    for i in range(n):  # decoder block: snake, transposed conv, 3 residual units
        ours, theirs = f"decoder.block.{i}", f"{dec}.{i + 1}.layers"
        snake(f"{ours}.snake1", f"{theirs}.0")
        conv(f"{ours}.conv_t1", f"{theirs}.1")
        for u in range(3):
            res_unit(f"{ours}.res_unit{u + 1}", f"{theirs}.{u + 2}")
    snake("decoder.snake1", f"{dec}.{n + 1}")
    conv("decoder.conv2", f"{dec}.{n + 2}", bias=False)  # then an Identity (final_tanh: false)
    return m


def rotary_frequencies(d: DiTSizes) -> torch.Tensor:
    """What stable-audio-tools stores as the rotary inv_freq buffer: base 10000 over rotary_dim."""
    return 1.0 / (10000 ** (torch.arange(0, d.rotary_dim, 2).float() / d.rotary_dim))


def _weight_norm_alias(key: str) -> str | None:
    """torch's newer weight-norm parametrization names the same two tensors differently."""
    for legacy, new in (("weight_g", "parametrizations.weight.original0"), ("weight_v", "parametrizations.weight.original1")):
        if key.endswith("." + legacy):
            return key[: -len(legacy)] + new
    return None


def _squeezed(shape) -> tuple[int, ...]:
    return tuple(s for s in shape if s != 1)


def load_tools_weights(container: nn.Module, path: Path, cfg: ToolsConfig, key_map: dict[str, Source],
                       dtype: torch.dtype):
    """Fill `container` (built on the meta device) from the checkpoint at `path`, every key used."""
    expected = container.state_dict()
    if set(key_map) != set(expected):
        raise AssertionError(f"key map out of date: {sorted(set(key_map) ^ set(expected))[:5]}")
    by_source: dict[str, list[tuple[str, Source]]] = {}
    for target, src in key_map.items():
        by_source.setdefault(src.key, []).append((target, src))
    with _open(path) as f:
        available = set(f.keys())
        used, state = set(), {}
        for key, targets in by_source.items():
            found = key if key in available else _weight_norm_alias(key)
            if found not in available:
                raise CheckpointError(f"{path} lacks tensor {key}")
            used.add(found)
            tensor = f.get_tensor(found)
            first = expected[targets[0][0]].shape
            want = (first[0] * targets[0][1].parts, *first[1:])
            if _squeezed(tensor.shape) != _squeezed(want):
                raise CheckpointError(f"tensor {found} in {path} has shape {tuple(tensor.shape)}, expected {want}")
            for target, src in targets:
                state[target] = tensor.chunk(src.parts)[src.part].reshape(expected[target].shape).to(dtype)
        if ROTARY_KEY in available:
            used.add(ROTARY_KEY)
            _check_rotary(f.get_tensor(ROTARY_KEY), cfg.dit, path)
    unexpected = sorted(available - used)
    if unexpected:
        raise CheckpointError(f"unexpected tensor {unexpected[0]} in {path}")
    container.load_state_dict(state, strict=True, assign=True)


def _check_rotary(stored: torch.Tensor, d: DiTSizes, path: Path):
    # why: the caller computes the rotary angles itself; a checkpoint trained with others would play noise
    want = rotary_frequencies(d)
    if stored.shape != want.shape or not torch.allclose(stored.float(), want, rtol=1e-4, atol=1e-7):
        raise CheckpointError(f"tensor {ROTARY_KEY} in {path} is not the rotary frequencies of "
                              f"{d.rotary_dim} dims and base 10000 that the config implies")


class _open:
    """safe_open with the OS's reason for an unreadable file and one line for a damaged one."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        from safetensors import safe_open

        try:
            open(self.path, "rb").close()  # the OS's own reason first: safetensors garbles some (chmod 000)
        except OSError as err:
            raise CheckpointError(f"cannot read {self.path}: {(err.strerror or str(err)).lower()}") from None
        try:
            self.handle = safe_open(str(self.path), framework="pt")
        except Exception as err:  # damaged files raise many error types; all mean the same to a user
            raise CheckpointError(f"checkpoint file {self.path} is damaged or incomplete ({type(err).__name__}); "
                                  "delete it and download it again") from None
        return self.handle

    def __exit__(self, *exc):
        self.handle = None
        return False
