"""Demucs bags from the hub repositories' layout (`NAME.yaml` listing the bag, one `SIG.safetensors` per
model), read without running anything a file names.

demucs' own `demucs.hf.load_safetensors_model` imports and calls whatever `klass` (and nested `_class`)
the safetensors metadata names, so a crafted file could run `os.system` on loading. Here the metadata is
read first, every class it names is checked against an explicit allow-list of demucs' model classes,
and only then is anything imported or called. The tensors come from `safetensors`, never a pickle."""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..errors import CheckpointError, ModelNotFound

# The only classes a checkpoint may name: metadata name -> (module, class) that we import ourselves.
MODEL_CLASSES = {
    "demucs.htdemucs.HTDemucs": ("demucs.htdemucs", "HTDemucs"),
    "demucs.hdemucs.HDemucs": ("demucs.hdemucs", "HDemucs"),
    "demucs.demucs.Demucs": ("demucs.demucs", "Demucs"),
}
SIGNATURE = re.compile(r"[A-Za-z0-9_.-]+")  # a model's file name in the bag, never a path


@dataclass
class StemModel:
    """A loaded bag of Demucs models and what separation needs to know of it."""

    bag: object  # demucs.apply.BagOfModels
    name: str
    sources: list[str]  # stem names in output order: drums, bass, other, vocals (+ guitar, piano)
    sample_rate: int
    channels: int
    device: object  # torch.device


def _refuse_classes(node, where: str):
    """Every `_class` node of a nested structure must name an allowed class; raise before anything is
    imported otherwise."""
    if isinstance(node, dict):
        if "_class" in node and node["_class"] not in MODEL_CLASSES:
            raise CheckpointError(f"{where} names class {node['_class']!r}, which is not a demucs model class: "
                                  "refused (nothing was imported or run)")
        for value in node.values():
            _refuse_classes(value, where)
    elif isinstance(node, list):
        for value in node:
            _refuse_classes(value, where)


def _decode(value):
    """demucs' json for init arguments: fractions (HTDemucs' segment) are {"_type": "fraction", ...}."""
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return Fraction(int(value["numerator"]), int(value["denominator"]))
        return {key: _decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item) for item in value]
    return value


def _unflatten(node, tensors: dict):
    """The nested state of a `structure` metadata entry (demucs' export of quantized states)."""
    if isinstance(node, dict):
        if "_tensor" in node:
            return tensors[node["_tensor"]]
        if "_dict" in node:
            return {key: _unflatten(item, tensors) for key, item in node["_dict"]}
        if "_list" in node or "_tuple" in node:
            items = [_unflatten(item, tensors) for item in node.get("_list", node.get("_tuple"))]
            return items if "_list" in node else tuple(items)
        if "_class" in node:  # allowed already (_refuse_classes)
            return _import_class(node["_class"])
        raise CheckpointError(f"invalid structure node {str(node)[:80]}")
    return node


def _import_class(name: str):
    import importlib

    module, attr = MODEL_CLASSES[name]
    return getattr(importlib.import_module(module), attr)


def read_metadata(path: Path) -> tuple[str, list, dict, object]:
    """(class name, args, kwargs, structure or None) of one model file, every class checked."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as err:  # not a safetensors file, truncated header
        raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from None
    klass = metadata.get("klass")
    if klass not in MODEL_CLASSES:
        raise CheckpointError(f"{path.name} names model class {klass!r}, not one of demucs' "
                              f"({', '.join(c.rsplit('.', 1)[1] for c in MODEL_CLASSES)}): refused (nothing was "
                              "imported or run)")
    try:
        args = _decode(json.loads(metadata.get("args", "[]")))
        kwargs = _decode(json.loads(metadata.get("kwargs", "{}")))
        structure = json.loads(metadata["structure"]) if "structure" in metadata else None
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path.name}: its metadata is not demucs' json ({err})") from None
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise CheckpointError(f"{path.name}: its metadata's args must be a list and kwargs an object")
    _refuse_classes([args, kwargs, structure], path.name)
    return klass, args, kwargs, structure


def load_model_file(path: Path):
    """One Demucs model from its safetensors file: metadata checked, class built, weights loaded."""
    from safetensors.torch import load_file

    klass, args, kwargs, structure = read_metadata(path)
    tensors = load_file(str(path))
    state = tensors if structure is None else _unflatten(structure, tensors)
    if isinstance(state, dict) and state.get("__quantized"):
        raise CheckpointError(f"{path.name} holds a quantized (diffq) model, which tunesmith does not run")
    cls = _import_class(klass)
    # As demucs does: arguments an older release wrote and this one no longer takes are dropped.
    known = inspect.signature(cls).parameters
    kwargs = {key: value for key, value in kwargs.items() if key in known}
    try:
        model = cls(*args, **kwargs)
        model.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path.name} does not build a {klass.rsplit('.', 1)[1]}: {first}") from None
    return model.eval()


def bag_file(folder: Path, name: str | None = None) -> Path:
    """The bag definition in `folder`: NAME.yaml when the name is known, else the folder's only .yaml."""
    if name is not None and (folder / f"{name}.yaml").is_file():
        return folder / f"{name}.yaml"
    found = sorted(folder.glob("*.yaml"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise CheckpointError(f"{folder} holds no Demucs bag (a NAME.yaml listing SIG.safetensors files)")
    raise CheckpointError(f"{folder} holds several bags ({', '.join(p.name for p in found)}): pass the .yaml file")


def read_bag(path: Path) -> tuple[list[str], list | None, float | None]:
    """(model signatures, per-source weights or None, segment seconds or None) of a bag yaml."""
    import yaml

    try:
        bag = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise CheckpointError(f"{path} cannot be read as a Demucs bag ({type(err).__name__})") from None
    models = bag.get("models") if isinstance(bag, dict) else None
    if not models or not isinstance(models, list) or not all(isinstance(m, str) and SIGNATURE.fullmatch(m)
                                                              for m in models):
        raise CheckpointError(f"{path} does not list its models (models: [SIG, ...])")
    weights, segment = bag.get("weights"), bag.get("segment")
    if weights is not None and (not isinstance(weights, list) or len(weights) != len(models)):
        raise CheckpointError(f"{path}: weights must give one row per model")
    if segment is not None and not (isinstance(segment, (int, float)) and segment > 0):
        raise CheckpointError(f"{path}: segment must be a number of seconds")
    return models, weights, segment


def load_bag(path: Path):
    """A demucs BagOfModels from a bag yaml and the SIG.safetensors files beside it."""
    from demucs.apply import BagOfModels

    signatures, weights, segment = read_bag(path)
    files = [path.parent / f"{sig}.safetensors" for sig in signatures]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"{path.name} lists {missing[0]}, which is not in {path.parent}")
    for f in files:  # every file's classes checked before any is built
        read_metadata(f)
    models = [load_model_file(f) for f in files]
    first = models[0]
    for model in models[1:]:
        if (model.sources, model.samplerate, model.audio_channels) != (first.sources, first.samplerate,
                                                                       first.audio_channels):
            raise CheckpointError(f"{path.name}: its models differ in sources, rate or channels")
    if weights is not None:
        if any(not isinstance(w, list) or len(w) != len(first.sources) for w in weights):
            raise CheckpointError(f"{path.name}: each weights row needs one number per source")
        # apply_model divides each source by its total weight: a zero total would make that stem NaN.
        if any(not isinstance(v, (int, float)) for w in weights for v in w) or any(
                sum(column) <= 0 for column in zip(*weights)):
            raise CheckpointError(f"{path.name}: each source needs a positive total weight across the models")
    return BagOfModels(models, weights, segment)


def find_bag(model: str | Path) -> Path:
    """A stems model name (htdemucs, htdemucs_ft, htdemucs_6s), a folder in the hub layout or a bag .yaml
    -> the bag .yaml on this machine (downloaded into the Hugging Face cache for a name)."""
    from ..hub import STEM_MODELS, local_folder, resolve

    name = str(model)
    path = Path(name).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    if name in STEM_MODELS:
        return bag_file(resolve(name), name)
    if path.is_file():
        raise ModelNotFound(f"{name} is a file; pass a bag .yaml or the folder that holds it")
    folder = local_folder(model)  # refuses a path that leads nowhere
    if folder is None:
        raise ModelNotFound(f"unknown stems model '{name}': use {', '.join(STEM_MODELS)}, or a folder holding "
                            "NAME.yaml and SIG.safetensors files")
    return bag_file(folder)


def load_stem_model(model: str | Path = "htdemucs", device: str = "auto") -> StemModel:
    """Load a Demucs bag for separation: a name (htdemucs, the default; htdemucs_ft, four fine-tuned
    models, slower and a little better; htdemucs_6s, adds guitar and piano), a folder in the hub
    repositories' layout, or a bag .yaml. device: auto, cpu, cuda or mps."""
    from ..device import pick_device

    dev = pick_device(device)
    path = find_bag(model)
    # On its device from the start: apply_model moves each model to the device and back to where it was
    # for every call otherwise.
    bag = load_bag(path).to(dev)
    return StemModel(bag, str(model), list(bag.sources), int(bag.samplerate), int(bag.audio_channels), dev)
