"""Stable Audio 3 adapters in Stability's single-file form, merged once into the weights.

A file is one .safetensors whose metadata "lora_config" holds JSON {rank, alpha (default: rank), adapter_type
(default "lora"), include, exclude}; its tensors are named as torch's parametrizations name them, relative to
the DiT wrapper (`model.transformer.layers.0.self_attn.to_qkv.parametrizations.weight.0.lora_A`) or to the
conditioners (`conditioners.seconds_total.embedder.embedding.1.parametrizations.weight.0.lora_A`). Every
Linear and Conv1d (a [out, in, k] weight seen as [out, in * k]) may have one. With s = alpha / rank and t the
adapter's strength (Stability's lora_strength, our scale), a layer's weight W becomes:

    lora        W + s t B A                            A [rank, in], B [out, rank]
    dora-rows   m_r * row_unit(W + s t B A)            m_r [out] (the paper's DoRA; legacy "dora" is this,
    dora-cols   m_c * col_unit(W + s t B A)            m_c [in]   or dora-cols when m is saved [1, in])
    bora        m_c * col_unit(m_r * row_unit(W + s t B A))
    *-xs        the same with U M V^T for B A          M [rank, rank]; U, V the first `rank` singular vectors
                                                       of the layer's original weight (signs made positive
                                                       where each column of U is largest), unless saved

unit(x) = x / (|x| + 1e-12); with t = 0 the adapter is off (a DoRA's magnitudes too). Adapters stack in order:
the second transforms the first's result, as Stability's parametrizations chain. include/exclude (substrings,
"layers[0-11]" ranges) choose the layers the reference adapts: a layer they leave out is not merged.

The DiT here is diffusers' (both layouts): Stability's names map through stability_layout.dit_source, and
Medium's differential to_qkv (rows [q q2 k k2 v] here, [q k v q2 k2] in Stability's) is put in Stability's
order for the merge (DoRA's norms are per row and column of the weight as Stability holds it) and back.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import torch
from torch import nn

from ..errors import TunesmithError
from ..lora import AdapterSpec, read_tensors, safetensors_header
from .stability_layout import dit_source, reorder_differential

log = logging.getLogger("tunesmith")

KINDS = {  # adapter type -> (tensors each layer holds, magnitudes: rows, columns)
    "lora": (("lora_A", "lora_B"), False, False),
    "dora-rows": (("lora_A", "lora_B", "magnitude"), True, False),
    "dora-cols": (("lora_A", "lora_B", "magnitude"), False, True),
    "bora": (("lora_A", "lora_B", "magnitude_r", "magnitude_c"), True, True),
    "lora-xs": (("M_xs",), False, False),
    "dora-rows-xs": (("M_xs", "magnitude"), True, False),
    "dora-cols-xs": (("M_xs", "magnitude"), False, True),
    "bora-xs": (("M_xs", "magnitude_r", "magnitude_c"), True, True),
}
KEY = re.compile(r"(?P<layer>.+)\.parametrizations\.weight\.0\.(?P<part>lora_A|lora_B|M_xs|magnitude|magnitude_r|"
                 r"magnitude_c|U|V)")
DIT_ROOT = "model."  # Stability's DiT wrapper holds the DiT as .model
SECONDS = "conditioners.{id}.embedder.embedding.1"  # the duration embedder's linear
EPS = 1e-12  # Stability's, in every norm
READ_KEPT = 16  # adapters kept read by a swapping model (merger)


@dataclass
class Sa3Adapter:
    spec: AdapterSpec
    kind: str  # a key of KINDS
    rank: int
    alpha: float
    layers: dict[str, dict[str, torch.Tensor]]  # Stability's layer name -> its tensors (float32, magnitudes 1-D)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


@dataclass(frozen=True)
class Site:
    """A layer adapters may change: the module's weight, and how Stability sees it."""

    part: str  # "transformer" or "seconds": the StableAudio3Parts field
    module: str  # the module's name in that part
    shape: tuple[int, int]  # (out, in) as Stability views the weight
    differential: bool = False  # a differential to_qkv: rows reordered between the layouts


# ---- reading ------------------------------------------------------------------------------------------------


def read_adapters(specs: list[AdapterSpec]) -> list[Sa3Adapter]:
    return [read_adapter(spec) for spec in specs]


def read_adapter(spec: AdapterSpec) -> Sa3Adapter:
    path = spec.path
    if path.is_dir():
        raise TunesmithError(f"LoRA {path} is a folder: Stable Audio 3 adapters are one .safetensors file "
                             "(Stability's form, its config in the file's metadata)")
    header = safetensors_header(path)
    config = _config(header.get("__metadata__") or {}, path)
    tensors = read_tensors(path)
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        m = KEY.fullmatch(key)
        if m is None:
            raise TunesmithError(f"LoRA {path} does not fit Stable Audio 3: {key} is not a tensor of Stability's "
                                 "adapters (an adapter for another family?)")
        layers.setdefault(m["layer"], {})[m["part"]] = tensor.float()
    if not layers:
        raise TunesmithError(f"LoRA {path} holds no tensors")
    kind = _kind(str(config.get("adapter_type", "lora")), layers, path)
    for name, parts in layers.items():
        missing = [n for n in KINDS[kind][0] if n not in parts]
        if missing:
            raise TunesmithError(f"LoRA {path}: layer {name} has no {missing[0]} (a {kind} adapter)")
        for n in ("magnitude", "magnitude_r", "magnitude_c"):
            if n in parts:
                parts[n] = parts[n].reshape(-1)  # Stability squeezes [out, 1] and [1, in] before loading
    first = next(iter(layers.values()))
    rank = config.get("rank", (first["lora_A"] if "lora_A" in first else first["M_xs"]).shape[0])
    alpha = config.get("alpha", rank)
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1 or not isinstance(alpha, (int, float)):
        raise TunesmithError(f"LoRA {path}: its config's rank ({rank!r}) and alpha ({alpha!r}) must be numbers")
    for name, parts in layers.items():
        own = parts["lora_A"].shape[0] if "lora_A" in parts else parts["M_xs"].shape[0]
        if own != rank:
            raise TunesmithError(f"LoRA {path}: layer {name} has rank {own}, its config says {rank}")
    layers = _chosen(layers, config.get("include"), config.get("exclude"), path)
    return Sa3Adapter(spec, kind, int(rank), float(alpha), layers)


def _config(metadata: dict, path: Path) -> dict:
    text = metadata.get("lora_config")
    if text is None:
        return {}  # Stability's loader then takes type "lora", rank from the tensors, alpha = rank
    try:
        config = json.loads(text)
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise TunesmithError(f"LoRA {path}: its metadata's lora_config is not a JSON object")
    return config



def _kind(kind: str, layers: dict, path: Path) -> str:
    """Legacy "dora": dora-cols when a magnitude was saved [1, in], else dora-rows (as Stability resolves it)."""
    if kind == "dora":
        first = next((p["magnitude"] for p in layers.values() if "magnitude" in p), None)
        kind = "dora-cols" if first is not None and first.dim() == 2 and first.shape[0] == 1 else "dora-rows"
    if kind not in KINDS:
        raise TunesmithError(f"LoRA {path} is a {kind!r} adapter: Stable Audio 3's are {', '.join(KINDS)}")
    return kind


def _expand(pattern: str) -> list[str]:
    """"layers[0-2]" -> ["layers0", "layers1", "layers2"] (a range may count down), as Stability's filters read."""
    pieces = re.split(r"\[(\d+)-(\d+)\]", pattern)
    texts, ranges = pieces[0::3], list(zip(pieces[1::3], pieces[2::3]))
    pools = [[str(n) for n in range(int(a), int(b) + (1 if int(b) >= int(a) else -1), 1 if int(b) >= int(a) else -1)]
             for a, b in ranges]
    out = []
    for numbers in product(*pools):
        out.append("".join(t + n for t, n in zip(texts, [*numbers, ""])))
    return out


def _matches(name: str, patterns) -> bool:
    return any(p in name for pattern in patterns or () for p in _expand(str(pattern).strip()))


def _chosen(layers: dict, include, exclude, path: Path) -> dict:
    """The layers Stability's loader adapts: include (when given) names them, exclude drops them."""
    for what, value in (("include", include), ("exclude", exclude)):
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise TunesmithError(f"LoRA {path}: its config's {what} must be a list of texts, got {value!r}")
    kept = {name: parts for name, parts in layers.items()
            if (include is None or _matches(name, include)) and not (exclude is not None and _matches(name, exclude))}
    if len(kept) < len(layers):
        log.info("LoRA %s: %d of its %d layers left out by its include/exclude", path, len(layers) - len(kept),
                 len(layers))
    return kept


# ---- the model's layers, placing and checking ---------------------------------------------------------------


def sites(transformer: nn.Module, seconds: nn.Module, seconds_id: str = "seconds_total") -> dict[str, Site]:
    """Stability's layer name -> Site, for every Linear and Conv1d of the DiT and the duration embedder
    (modules on the meta device will do: only their shapes are read)."""
    differential = bool(getattr(getattr(transformer, "config", None), "use_differential_attention", False))
    out = {}
    for name, module in transformer.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            stability = dit_source(name + ".weight").removeprefix("model.")[: -len(".weight")]
            out[stability] = Site("transformer", name, _viewed(module.weight.shape),
                                  differential and name.endswith("self_attn.to_qkv"))
    for name, module in seconds.named_modules():
        if isinstance(module, nn.Linear):
            out[SECONDS.format(id=seconds_id)] = Site("seconds", name, _viewed(module.weight.shape))
    return out


def _viewed(shape) -> tuple[int, int]:
    return shape[0], int(torch.Size(shape[1:]).numel())


def checkpoint_sites(folder: Path) -> dict[str, Site]:
    """sites() of a checkpoint folder (either layout) from its config and safetensors headers: modules built
    on the meta device, no weight read, so an adapter is refused before the model loads."""
    from diffusers import StableAudio3DiTModel
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder

    from ..quiet import quiet_loading
    from . import stability_layout
    from .load import is_diffusers_folder

    with quiet_loading(), torch.device("meta"):
        if is_diffusers_folder(folder):
            dit = StableAudio3DiTModel.from_config(StableAudio3DiTModel.load_config(folder / "transformer"))
            seconds = StableAudio3DurationEmbedder.from_config(
                StableAudio3DurationEmbedder.load_config(folder / "duration_embedder"))
            return sites(dit, seconds)
        shapes = stability_layout.checkpoint_shapes(folder)
        dit = StableAudio3DiTModel(**stability_layout.dit_config(shapes, folder))
        number = stability_layout._conditioner(stability_layout.read_raw_config(folder), "number", folder)
        seconds_id = number.get("id", "seconds_total")
        out, fourier = shapes.get(f"{stability_layout.COND}{seconds_id}.embedder.embedding.1.weight", (0, 0))
        return sites(dit, StableAudio3DurationEmbedder(output_dim=out, fourier_dim=fourier), seconds_id)


@dataclass
class Placed:
    adapter: Sa3Adapter
    layer: str  # Stability's name
    site: Site


def fit(adapters: list[Sa3Adapter], model_sites: dict[str, Site], model: str) -> list[Placed]:
    """Every layer of every adapter placed on a site and its tensors' shapes checked, or one line naming the
    first that does not fit."""
    placed = []
    for adapter in adapters:
        where, r = adapter.spec.path, adapter.rank
        for name, parts in adapter.layers.items():
            site = model_sites.get(name)
            if site is None:
                raise TunesmithError(f"LoRA {where} does not fit {model}: its layer {name} is none of the model's "
                                     "(an adapter for another family?)")
            out, width = site.shape
            expected = dict(lora_A=(r, width), lora_B=(out, r), M_xs=(r, r), U=(out, r), V=(width, r),
                            magnitude_r=(out,), magnitude_c=(width,),
                            magnitude=(width,) if KINDS[adapter.kind][2] and not KINDS[adapter.kind][1] else (out,))
            for part, tensor in parts.items():
                if tuple(tensor.shape) != expected[part]:
                    raise TunesmithError(f"LoRA {where} does not fit {model}: layer {name} ({part} "
                                         f"{list(tensor.shape)}) is not for the model's {width} -> {out} features "
                                         "(an adapter for another size or family)")
            placed.append(Placed(adapter, name, site))
    return placed


# ---- merging ------------------------------------------------------------------------------------------------


def merge(parts, placed: list[Placed]):
    """Each placed layer's adapter applied to its weight, adapters in order, in float32 (the weights are the
    loaded float32 ones: cast to the model's dtype after). Changes the modules in place."""
    merge_weights(site_weights(parts, {p.layer: p.site for p in placed}), placed)


def site_weights(parts, model_sites: dict[str, Site]) -> dict[str, torch.Tensor]:
    """Stability's layer name -> the weight (a Parameter of parts' modules) of each site."""
    return {name: getattr(parts, site.part).get_submodule(site.module).weight for name, site in model_sites.items()}


def touched(placed: list[Placed]) -> set[str]:
    """The layers a merge changes (strength 0: Stability's layers return W unchanged, DoRA's too)."""
    return {p.layer for p in placed if p.adapter.spec.scale != 0}


def merge_weights(weights: dict[str, torch.Tensor], placed: list[Placed]):
    """merge() on weights by Stability's layer name (each shaped as its module's weight, changed in place): the
    layer's weight as it is now is the original an -xs adapter builds on."""
    import time

    start = time.perf_counter()
    by_layer: dict[str, list[Placed]] = {}
    for p in placed:
        if p.adapter.spec.scale != 0:
            by_layer.setdefault(p.layer, []).append(p)
    with torch.no_grad():
        for layer, stack in by_layer.items():
            site, weight = stack[0].site, weights[layer]
            base = _to_stability(weight.detach().float().reshape(site.shape[0], -1), site)
            w = base
            for p in stack:
                w = apply(p.adapter, p.adapter.layers[p.layer], w, base)
            weight.copy_(_from_stability(w, site).reshape(weight.shape).to(weight.dtype))
    if by_layer:
        log.info("merged %d Stable Audio 3 adapter layers into %d weights in %.2f s", len(placed), len(by_layer),
                 time.perf_counter() - start)


def merger(model_sites: dict[str, Site], model: str):
    """Stability's adapters as lora_swap swaps them (use_lora): weights by Stability's layer name. The adapters
    of the last sets are kept read: adapters with a noise-level interval swap at step boundaries."""
    from ..lora_swap import Merger, key_of

    read: dict[tuple, Sa3Adapter] = {}

    def place(specs: list[AdapterSpec]) -> list[Placed]:
        adapters = []
        for spec in specs:
            key = key_of([spec])  # the file as it is now, its scale and interval
            if key not in read:
                if len(read) >= READ_KEPT:
                    read.pop(next(iter(read)))
                read[key] = read_adapter(spec)
            adapters.append(read[key])
        return fit(adapters, model_sites, model)

    return Merger(place=place, touched=touched, merge=merge_weights)


def acting(specs: list[AdapterSpec], level: torch.Tensor) -> list[AdapterSpec]:
    """The adapters whose noise-level interval holds `level` (the step's noise level, float32 as the sampler
    holds it, compared as Stability compares sigma: low <= level <= high), in order; no interval: always."""
    return [s for s in specs if s.interval is None or bool((level >= s.interval[0]) & (level <= s.interval[1]))]


def _to_stability(w: torch.Tensor, site: Site) -> torch.Tensor:
    if not site.differential:
        return w
    q, q2, k, k2, v = w.chunk(5, dim=0)
    return torch.cat([q, k, v, q2, k2], dim=0)


def _from_stability(w: torch.Tensor, site: Site) -> torch.Tensor:
    return reorder_differential(w) if site.differential else w


def apply(adapter: Sa3Adapter, parts: dict[str, torch.Tensor], w: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """One adapter layer on the weight w [out, in] (float32, Stability's row order); base: the layer's original
    weight, whose singular vectors an -xs adapter builds on."""
    _, rows, cols = KINDS[adapter.kind]
    strength = adapter.scaling * adapter.spec.scale
    if "M_xs" in parts:
        u, v = (parts["U"], parts["V"]) if "U" in parts else _bases(base, adapter.rank)
        w = w + strength * (u @ parts["M_xs"] @ v.T)  # [out, in]
    else:  # w + s t B A in one pass over the weight (a new tensor: w may be the layer's weight itself)
        w = torch.addmm(w, parts["lora_B"], parts["lora_A"], alpha=strength)  # [out, in]
    if rows:
        w = w / (w.norm(dim=1, keepdim=True) + EPS) * parts.get("magnitude_r", parts.get("magnitude"))[:, None]
    if cols:
        w = w / (w.norm(dim=0, keepdim=True) + EPS) * parts.get("magnitude_c", parts.get("magnitude"))[None, :]
    return w


def _bases(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `rank` left and right singular vectors of w, each U column's largest entry made positive."""
    u, _, vh = torch.linalg.svd(w.cpu().float(), full_matrices=False)
    sign = u[u.abs().argmax(dim=0), torch.arange(u.shape[1])].sign()
    sign[sign == 0] = 1
    return (u * sign)[:, :rank].to(w.device), (vh * sign[:, None])[:rank].T.to(w.device)
