"""LoRA adapters, for every family: read them (safetensors only), check them against a model's weights,
merge them in order into those weights once (lora_swap.py keeps what a merge touches, to revert it exactly).

An adapter is a low-rank update of some linear weights: W [out, in] += scale * alpha / rank * B @ A,
A ("lora_A", "lora_down") [rank, in], B ("lora_B", "lora_up") [out, rank]. Two forms are read:

- a PEFT folder (adapter_config.json + adapter_model.safetensors), what ACE-Step's trainer and PEFT's
  save_pretrained write: alpha from the config (lora_alpha, alpha_pattern; use_rslora: alpha / sqrt(rank));
- one .safetensors file (ComfyUI's form): the same keys, alpha from a per-layer `.alpha` tensor, else
  from an adapter_config.json beside it, else the rank (ComfyUI's and diffusers' assumption; said in
  a warning, since ACE-Step's trainer uses alpha = 2 x rank and such a file would play at half strength).

A family supplies `locate` (the adapter's layer name -> a Target: the weight's name and the rows the layer
writes, None when the name is not one of its layers) and the shapes of those weights; `fit` checks every
layer of every adapter before `merge` touches a weight, so a refused adapter leaves the model as it was.
check_fit does the same from an adapter's safetensors header alone (a server's submit, against the shapes a
loaded model recorded: Fitting); headers are kept by file stamp, so a file is read again only when it changed.
Torch is imported inside functions: the CLI and the server parse and check specs without it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import InvalidParameter, TunesmithError

log = logging.getLogger("tunesmith")

SCALE_LIMIT = 2.0  # |scale| <= 2: past that an adapter is its own artefact, not the style it learnt
CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"  # a PEFT folder's files
HEADER_LIMIT = 100 << 20  # bytes: a safetensors header longer than this is not one
HEADERS_KEPT, HEADER_BYTES_KEPT = 64, 16 << 20  # headers read and kept (by file stamp), and their bytes at most
_HEADERS: OrderedDict[tuple, tuple[dict, int]] = OrderedDict()  # (path, stamp) -> (header, its bytes)
_header_bytes = 0
_headers_lock = threading.Lock()  # a server's request threads share them
# The tensor kinds of a layer, as PEFT (lora_A/lora_B) and kohya/ComfyUI (lora_down/lora_up) name them.
DOWN, UP = ("lora_A", "lora_down"), ("lora_B", "lora_up")
KEY = re.compile(r"(?P<layer>.+?)\.(?P<kind>lora_A|lora_B|lora_down|lora_up)(?:\.\w+)?\.weight|(?P<alpha>.+)\.alpha")


@dataclass(frozen=True)
class AdapterSpec:
    """One adapter as asked: its path and its strength (1: as trained; negative: its opposite), and for Stable
    Audio 3 the noise levels (low, high) its DiT layers act at (Stability's LoRA interval; None: every step)."""

    path: Path
    scale: float = 1.0
    interval: tuple[float, float] | None = None

    def __str__(self) -> str:
        shown = f"{self.path}@{self.scale:g}"
        if self.interval is None:
            return shown
        return f"{shown} (noise levels {self.interval[0]:g} to {self.interval[1]:g})"


@dataclass
class LoraLayer:
    down: object  # A: torch.Tensor [rank, in]
    up: object  # B: torch.Tensor [out, rank]
    alpha: float
    rslora: bool = False  # scaling alpha / sqrt(rank) instead of alpha / rank

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    def delta(self, scale: float):
        """scale * scaling * B @ A: [out, in] float32."""
        return (scale * self.scaling) * (self.up.float() @ self.down.float())


@dataclass
class Adapter:
    spec: AdapterSpec
    layers: dict[str, LoraLayer]  # the adapter's layer name (as its file writes it) -> the layer


@dataclass(frozen=True)
class Target:
    """Where one adapter layer lands: a weight of the model and the rows of it that the layer writes
    (a fused q/k/v weight takes q's layer in its first third)."""

    weight: str  # the weight's name in the family's `weights` dict
    rows: tuple[int, int] | None = None  # [start, stop) of the weight's rows; None: all of them


@dataclass(frozen=True)
class Fitting:
    """What checking an adapter against a loaded model needs without the model, small and plain (JSON: a
    cluster's generation replica hands it to the ingress through the shared data folder): the family, whose
    lora_locator (the family table) made with `arguments` places an adapter's layers, and the (out, in) of
    every weight adapters may reach."""

    family: str
    arguments: dict  # what the family's locator takes (MusicGen: the decoder's width and vocabulary)
    shapes: dict[str, tuple[int, int]]  # weight name -> (out, in)

    def as_json(self) -> dict:
        return dict(family=self.family, arguments=self.arguments, shapes={k: list(v) for k, v in self.shapes.items()})

    @classmethod
    def from_json(cls, data: dict) -> "Fitting":
        return cls(str(data["family"]), dict(data["arguments"]),
                   {str(k): (int(v[0]), int(v[1])) for k, v in data["shapes"].items()})


@dataclass
class Patch:
    target: Target
    layer: LoraLayer
    scale: float
    name: str  # the adapter's layer name, for messages


# ---- the specs: paths and scales, checked before anything is read ------------------------------------------


def parse_specs(value, param: str = "lora (--lora)") -> list[AdapterSpec]:
    """None -> []; a path, "path@scale", (path, scale), (path, scale, (low, high)) (Stable Audio 3's noise-level
    interval), an AdapterSpec or a list of them -> checked specs, in order. "@" separates the scale because ":"
    is in Windows paths; a path holding "@" is taken whole unless what follows its last "@" is a number."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    specs = []
    for item in items:
        interval = None
        if isinstance(item, AdapterSpec):
            path, scale, interval = item.path, item.scale, item.interval
        elif isinstance(item, tuple) and len(item) in (2, 3):
            path, scale, *rest = item
            interval = rest[0] if rest else None
        elif isinstance(item, (str, Path)):
            path, scale = _split_scale(str(item))
        else:
            raise InvalidParameter(f"{param} must be a path, \"path@scale\", (path, scale) or a list of them, "
                                   f"got {item!r}")
        if not isinstance(path, (str, Path)) or not str(path):
            raise InvalidParameter(f"{param}: an adapter's path must be a text, got {path!r}")
        specs.append(AdapterSpec(Path(path).expanduser(), check_scale(scale, param),
                                 None if interval is None else check_interval(interval, param)))
    for spec in specs:
        if not spec.path.exists():
            raise InvalidParameter(f"{param}: {spec.path} does not exist")
    return specs


def check_specs(value, param: str = "lora (--lora)") -> list[AdapterSpec]:
    """parse_specs, and each adapter's weights file found and its header read as safetensors: what the CLI and
    load() check before a model is downloaded or read (the layers' shapes are checked once the model's config
    is at hand)."""
    specs = parse_specs(value, param)
    for spec in specs:
        check_safetensors(_weights_file(spec.path))
    return specs


def _weights_file(path: Path) -> Path:
    """The safetensors file of an adapter path (a PEFT folder's adapter_model.safetensors), or one line."""
    if not path.is_dir():
        return path
    weights = path / WEIGHTS
    if not weights.is_file():
        pickled = [p.name for p in (path / "adapter_model.bin", path / "adapter_model.pt") if p.is_file()]
        why = (f"holds {pickled[0]}, a pickle: tunesmith reads adapters as safetensors only" if pickled
               else f"has no {WEIGHTS}")
        raise TunesmithError(f"LoRA folder {path} {why}")
    return weights


def _split_scale(text: str) -> tuple[str, object]:
    head, at, tail = text.rpartition("@")
    if at and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return text, 1.0


def check_scale(scale, param: str = "lora (--lora)") -> float:
    import numbers

    if (isinstance(scale, numbers.Real) and not isinstance(scale, bool) and math.isfinite(scale)
            and abs(float(scale)) <= SCALE_LIMIT):
        return float(scale)
    raise InvalidParameter(f"{param}: a scale must be a number from -{SCALE_LIMIT:g} to {SCALE_LIMIT:g}, got {scale!r}")


def check_interval(interval, param: str = "lora (--lora)") -> tuple[float, float]:
    """(low, high) noise levels with 0 <= low <= high <= 1 (Stability's LoRA interval: its sliders' range)."""
    import numbers

    pair = tuple(interval) if isinstance(interval, (tuple, list)) else ()
    if (len(pair) == 2 and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in pair)
            and 0 <= pair[0] <= pair[1] <= 1):
        return float(pair[0]), float(pair[1])
    raise InvalidParameter(f"{param}: a noise-level interval must be (low, high) with 0 <= low <= high <= 1, "
                           f"got {interval!r}")


# ---- reading ------------------------------------------------------------------------------------------------


def read_adapters(specs: list[AdapterSpec]) -> list[Adapter]:
    return [read_adapter(spec) for spec in specs]


def read_adapter(spec: AdapterSpec) -> Adapter:
    """The adapter's layers, from a PEFT folder or one safetensors file; every refusal one line."""
    path = spec.path
    if spec.interval is not None:
        raise InvalidParameter(f"LoRA {path}: a noise-level interval is for Stable Audio 3's adapters (Stability's "
                               "LoRA interval); this family's act at every step")
    weights = _weights_file(path)
    config_path = (path / CONFIG) if path.is_dir() else path.with_name(CONFIG)  # a PEFT folder's, or beside the file
    config_path = config_path if config_path.is_file() else None
    check_safetensors(weights)
    config = _read_config(config_path) if config_path else {}
    if config.get("use_dora"):
        raise TunesmithError(f"LoRA {path} is a DoRA adapter (use_dora): this family merges plain LoRA only")
    peft_type = config.get("peft_type", "LORA")
    if str(peft_type).upper() != "LORA":
        raise TunesmithError(f"LoRA {path} is a PEFT {peft_type} adapter, not a LoRA")
    tensors = read_tensors(weights)
    return Adapter(spec, _layers(tensors, config, weights))


def check_safetensors(path: Path):
    """Refuse a file that is not safetensors from its first bytes (a u64 header length, then a JSON
    object), before any library reads it: an adapter is never unpickled."""
    safetensors_header(path)


def safetensors_header(path: Path, what: str = "LoRA") -> dict:
    """A safetensors file's header (tensor name -> dtype, shape, offsets; "__metadata__"), read without its
    tensors; a file that is not one, or cannot be read, is one line. Kept by the file's stamp (a server reads
    the same adapters' headers at every submit): a file replaced or changed is read again. The dict is shared:
    read it, never change it."""
    key = (str(path), stamp(path))
    with _headers_lock:
        kept = _HEADERS.get(key) if key[1] else None
        if kept is not None:
            _HEADERS.move_to_end(key)
            return kept[0]
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            ok = 2 <= n <= min(HEADER_LIMIT, size - 8)
            header = json.loads(f.read(n)) if ok else None
    except OSError as err:
        raise TunesmithError(f"{what} {path} cannot be read ({err.strerror or err})") from None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        raise TunesmithError(f"{what} {path} is not a safetensors file: tunesmith reads adapters as safetensors only "
                             "(never pickles: convert a .bin/.pt adapter with safetensors' own tools)")
    if key[1]:
        _keep_header(key, header, n)
    return header


def stamp(path: Path) -> tuple:
    """(mtime_ns, size) of an adapter's weights file (a PEFT folder's adapter_model.safetensors), or of any
    file: what tells a file replaced or changed in place; () when it is gone."""
    weights = path / WEIGHTS if path.is_dir() else path
    try:
        stat = weights.stat()
    except OSError:  # gone: the reader says so in one line
        return ()
    return stat.st_mtime_ns, stat.st_size


def _keep_header(key: tuple, header: dict, size: int):
    """Keep a header read, the least recently used dropped past HEADERS_KEPT of them or HEADER_BYTES_KEPT bytes."""
    global _header_bytes
    if size > HEADER_BYTES_KEPT:
        return
    with _headers_lock:
        old = _HEADERS.pop(key, None)
        _header_bytes += size - (old[1] if old else 0)
        _HEADERS[key] = (header, size)
        while len(_HEADERS) > HEADERS_KEPT or _header_bytes > HEADER_BYTES_KEPT:
            _, (_, dropped) = _HEADERS.popitem(last=False)
            _header_bytes -= dropped


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise TunesmithError(f"LoRA config {path} cannot be read as JSON ({err})") from None
    if not isinstance(config, dict):
        raise TunesmithError(f"LoRA config {path} is not a JSON object")
    return config


def read_tensors(path: Path) -> dict:
    """An adapter's tensors (safetensors only), a damaged file in one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise TunesmithError(f"LoRA {path} is a damaged safetensors file ({err})") from None


def _pattern_value(patterns: dict, layer: str):
    """PEFT's rank_pattern / alpha_pattern: a key matches a layer name's tail (regular expression)."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", layer):
            return value
    return None


def _layers(tensors: dict, config: dict, path: Path) -> dict[str, LoraLayer]:
    parts: dict[str, dict] = {}
    for key, tensor in tensors.items():
        m = KEY.fullmatch(key)
        if m is None:
            what = "a DoRA magnitude" if "magnitude" in key or "dora" in key else "a tensor that is not LoRA"
            raise TunesmithError(f"LoRA {path} holds {what}: {key}")
        if m["alpha"] is not None:
            parts.setdefault(m["alpha"], {})["alpha"] = float(tensor.float().reshape(-1)[0])
        else:
            parts.setdefault(m["layer"], {})["down" if m["kind"] in DOWN else "up"] = tensor
    if not parts:
        raise TunesmithError(f"LoRA {path} holds no tensors")
    default_alpha = config.get("lora_alpha")
    alphas = config.get("alpha_pattern") or {}
    rslora = bool(config.get("use_rslora", False))
    layers, guessed = {}, False
    for name, p in parts.items():
        if "down" not in p or "up" not in p:
            missing = "lora_A (down)" if "down" not in p else "lora_B (up)"
            raise TunesmithError(f"LoRA {path}: layer {name} has no {missing} weight")
        down, up = p["down"], p["up"]
        if down.ndim != 2 or up.ndim != 2 or up.shape[1] != down.shape[0]:
            raise TunesmithError(f"LoRA {path}: layer {name} is not a low-rank pair of matrices "
                                 f"(A {list(down.shape)}, B {list(up.shape)})")
        alpha = p.get("alpha", _pattern_value(alphas, name))
        if alpha is None:
            alpha = default_alpha
        if alpha is None:
            alpha, guessed = down.shape[0], True
        layers[name] = LoraLayer(down, up, float(alpha), rslora)
    if guessed:
        log.warning("LoRA %s gives no alpha (no adapter_config.json, no .alpha tensors): taken as its rank, "
                    "scale 1 per unit, as diffusers and ComfyUI do; an adapter trained with alpha = 2 x rank "
                    "(ACE-Step's trainer) then plays at half strength: keep its adapter_config.json beside it", path)
    return layers


# ---- placing, merging ----------------------------------------------------------------------------------------


def fit(adapters: list[Adapter], locate: Callable[[str], Target | None], shapes: dict[str, tuple[int, int]],
        model: str) -> list[Patch]:
    """Every layer of every adapter placed on the model's weights and its shape checked, or one line naming
    the first layer that does not fit. shapes: weight name -> (out, in) of the whole weight."""
    patches = []
    for adapter in adapters:
        for name, layer in adapter.layers.items():
            target = place(f"LoRA {adapter.spec.path}", name, (layer.up.shape[0], layer.down.shape[1]), locate,
                           shapes, model)
            patches.append(Patch(target, layer, adapter.spec.scale, name))
    return patches


def place(where: str, name: str, theirs: tuple[int, int], locate: Callable[[str], Target | None],
          shapes: dict[str, tuple[int, int]], model: str) -> Target:
    """Where the adapter layer `name`, mapping theirs[1] -> theirs[0] features, lands on the model, or one
    line naming `where` (the adapter) and the layer."""
    target = locate(name)
    if target is None or target.weight not in shapes:
        raise TunesmithError(f"{where} does not fit {model}: its layer {name} is none of the model's "
                             "(an adapter for another family?)")
    out, width = shapes[target.weight]
    rows = (target.rows[1] - target.rows[0]) if target.rows else out
    if tuple(theirs) != (rows, width):
        raise TunesmithError(f"{where} does not fit {model}: layer {name} maps {theirs[1]} -> {theirs[0]} "
                             f"features, the model's {width} -> {rows} (an adapter for another size or family)")
    return target


def check_fit(where: str, path: Path, locate: Callable[[str], Target | None], shapes: dict[str, tuple[int, int]],
              model: str):
    """An adapter's layers placed on a model from its safetensors header alone (no tensor read: what a server
    checks at submit), or one line naming `where` and the first layer that does not fit. A layer missing a
    half is left to read_adapter, which refuses it in its own words."""
    halves: dict[str, dict[str, list]] = {}
    for key, entry in safetensors_header(_weights_file(path)).items():
        m = KEY.fullmatch(key)
        if m is not None and m["layer"] is not None and isinstance(entry, dict):
            halves.setdefault(m["layer"], {})["down" if m["kind"] in DOWN else "up"] = entry.get("shape")
    for name, half in halves.items():
        down, up = half.get("down"), half.get("up")
        if isinstance(down, list) and isinstance(up, list) and len(down) == len(up) == 2:
            place(where, name, (up[0], down[1]), locate, shapes, model)


def merge(weights: dict, patches: list[Patch]):
    """Add each patch's delta to its weight's rows, in order (adapters stack: the second adds to the first's
    result). weights: name -> tensor or Parameter, changed in place; the sum is made in float32 and
    rounded once to the weight's dtype. To revert exactly, keep the touched weights first (lora_swap)."""
    import time

    import torch

    start = time.perf_counter()
    with torch.no_grad():
        for patch in patches:
            weight = weights[patch.target.weight]
            rows = slice(*patch.target.rows) if patch.target.rows else slice(None)
            part = weight.data[rows]
            if part.dtype == torch.float32:  # in place, B @ A never held whole: the merge's cost is this product
                layer = patch.layer
                part.addmm_(layer.up.float().to(part.device), layer.down.float().to(part.device),
                            alpha=patch.scale * layer.scaling)
            else:
                delta = patch.layer.delta(patch.scale).to(part.device)
                part.copy_((part.float() + delta).to(part.dtype))
    if patches:
        log.info("merged %d LoRA layers into %d weights in %.2f s", len(patches),
                 len({p.target.weight for p in patches}), time.perf_counter() - start)


def describe(specs: list[AdapterSpec]) -> list[list]:
    """[[path, scale], ...] ([path, scale, [low, high]] with a noise-level interval): the adapters as clips'
    params record them."""
    return [[str(spec.path), spec.scale, *([list(spec.interval)] if spec.interval else [])] for spec in specs]
