"""Stability's Stable Audio 3 adapters, written in the tests from Stability's definitions (its LoRA docs and
parametrization module): files in its single-file form (fp16 tensors named `<layer>.parametrizations.weight.0.
<part>`, the config as JSON in the metadata's "lora_config"), and an un-merged reference: each adapter a torch
parametrization on the layer's weight, stacked in order, the weight recomputed at every forward.

    lora:  W + s t B A;  dora-rows: m * rows_unit(W + s t B A);  dora-cols: per column;  bora: rows (m_r), then
    columns (m_c);  -xs: U M V^T for B A, U and V the layer's original weight's first singular vectors, each U
    column's largest-magnitude entry positive.  unit(x) = x / (|x| + 1e-12); t = 0: the weight unchanged.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import parametrize

from .stability import DIT_RENAMES

MAGNITUDES = {"lora": (), "dora-rows": ("magnitude",), "dora-cols": ("magnitude",), "bora": ("magnitude_r", "magnitude_c")}


def stability_layers(pipe) -> dict[str, tuple[nn.Module, bool]]:
    """Stability's layer name (relative to its DiT wrapper, or to its conditioners) -> (the pipeline's module,
    whether it is a differential to_qkv)."""
    out = {}
    differential = pipe.transformer.config.use_differential_attention
    for name, module in pipe.transformer.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv1d)):
            continue
        stability = name
        for ours, theirs in DIT_RENAMES:
            if name.startswith(ours.rstrip(".")):
                stability = theirs.rstrip(".") + name[len(ours.rstrip(".")):]
                break
        stability = stability.replace(".ff.proj_in", ".ff.ff.0.proj").replace(".ff.proj_out", ".ff.ff.2")
        out["model." + stability] = (module, differential and name.endswith("self_attn.to_qkv"))
    out["conditioners.seconds_total.embedder.embedding.1"] = (pipe.duration_embedder.linear, False)
    return out


def to_stability_rows(w: torch.Tensor) -> torch.Tensor:
    q, q2, k, k2, v = w.chunk(5, dim=0)
    return torch.cat([q, k, v, q2, k2], dim=0)


def from_stability_rows(w: torch.Tensor) -> torch.Tensor:
    q, k, v, q2, k2 = w.chunk(5, dim=0)
    return torch.cat([q, q2, k, k2, v], dim=0)


def random_adapter(pipe, kind: str, rank: int, seed: int, size: float = 0.3, names=None) -> dict[str, torch.Tensor]:
    """Random tensors of a `kind` adapter on the layers `names` (default: every layer), as a trained one holds
    them: magnitudes near the weight's own norms (in Stability's row order)."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, (module, differential) in stability_layers(pipe).items():
        if names is not None and name not in names:
            continue
        w = module.weight.detach().reshape(module.weight.shape[0], -1)
        w = to_stability_rows(w) if differential else w
        out, width = w.shape
        key = name + ".parametrizations.weight.0."
        if kind.endswith("-xs"):
            tensors[key + "M_xs"] = size * torch.randn(rank, rank, generator=g)
        else:
            tensors[key + "lora_A"] = torch.randn(rank, width, generator=g) / width ** 0.5
            tensors[key + "lora_B"] = size * torch.randn(out, rank, generator=g)
        base = kind.removesuffix("-xs")
        wobble = lambda n: 1 + 0.2 * torch.randn(n, generator=g)  # noqa: E731
        if base == "dora-rows":
            tensors[key + "magnitude"] = w.norm(dim=1) * wobble(out)
        elif base == "dora-cols":
            tensors[key + "magnitude"] = w.norm(dim=0) * wobble(width)
        elif base == "bora":
            tensors[key + "magnitude_r"] = w.norm(dim=1) * wobble(out)
            tensors[key + "magnitude_c"] = w.norm(dim=0) * wobble(width)
    return tensors


def write_adapter(path: Path, tensors: dict, config: dict | None) -> Path:
    """Stability's file: fp16 tensors, the config JSON under the metadata's "lora_config"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"lora_config": json.dumps(config)} if config is not None else None
    save_file({k: v.half().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


class StabilityAdapter(nn.Module):
    """One adapter on one weight, as Stability's parametrization computes it."""

    def __init__(self, kind: str, parts: dict, scaling: float, strength: float, original: torch.Tensor,
                 differential: bool, index: int = 0):
        super().__init__()
        self.kind, self.parts, self.scaling, self.strength, self.differential = kind, parts, scaling, strength, differential
        self.index, self.enabled = index, True  # Stability's lora_index; disable_lora makes the layer the identity
        if kind.endswith("-xs"):
            w0 = original.reshape(original.shape[0], -1).float()
            w0 = to_stability_rows(w0) if differential else w0
            u, _, vh = torch.linalg.svd(w0, full_matrices=False)
            signs = u[u.abs().argmax(dim=0), torch.arange(u.shape[1])].sign()
            signs[signs == 0] = 1
            rank = parts["M_xs"].shape[0]
            self.u, self.v = (u * signs[None, :])[:, :rank], (vh * signs[:, None])[:rank].T

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.strength == 0 or not self.enabled:
            return weight
        shape = weight.shape
        w = weight.reshape(shape[0], -1)
        w = to_stability_rows(w) if self.differential else w
        p = self.parts
        delta = self.u @ p["M_xs"] @ self.v.T if self.kind.endswith("-xs") else p["lora_B"] @ p["lora_A"]
        v = w + self.scaling * self.strength * delta
        base = self.kind.removesuffix("-xs")
        if base == "dora-rows":
            v = v / (v.norm(dim=1, keepdim=True) + 1e-12) * p["magnitude"].reshape(-1, 1)
        elif base == "dora-cols":
            v = v / (v.norm(dim=0, keepdim=True) + 1e-12) * p["magnitude"].reshape(1, -1)
        elif base == "bora":
            v = v / (v.norm(dim=1, keepdim=True) + 1e-12) * p["magnitude_r"].reshape(-1, 1)
            v = v / (v.norm(dim=0, keepdim=True) + 1e-12) * p["magnitude_c"].reshape(1, -1)
        v = from_stability_rows(v) if self.differential else v
        return v.reshape(shape)


def with_adapters(pipe, adapters: list[tuple[str, dict, dict, float]]):
    """A copy of the pipeline with each (kind, tensors, config, strength) registered on its layers, in order
    (the tensors as the file holds them: fp16 values, read back as float32). Layers the config's include/exclude
    leave out get none (substring match; ranges are not used by these tests)."""
    pipe = copy.deepcopy(pipe)
    layers = stability_layers(pipe)
    for index, (kind, tensors, config, strength) in enumerate(adapters):
        rank = config.get("rank")
        scaling = config.get("alpha", rank) / rank
        by_layer: dict[str, dict] = {}
        for key, value in tensors.items():
            layer, part = key.split(".parametrizations.weight.0.")
            by_layer.setdefault(layer, {})[part] = value.half().float()
        for layer, parts in by_layer.items():
            if config.get("include") is not None and not any(p in layer for p in config["include"]):
                continue
            if config.get("exclude") is not None and any(p in layer for p in config["exclude"]):
                continue
            module, differential = layers[layer]
            original = (module.parametrizations.weight.original if parametrize.is_parametrized(module, "weight")
                        else module.weight).detach().clone()
            parametrize.register_parametrization(module, "weight", StabilityAdapter(
                kind, parts, scaling, strength, original, differential, index), unsafe=True)
    return pipe
