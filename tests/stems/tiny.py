"""Tiny random Demucs bags in the hub repositories' layout (what demucs' tools/export_hf.py writes):
NAME.yaml listing the bag, and per model SIG.safetensors whose metadata holds the class (`klass`) and
its init arguments as json (`args`, `kwargs`; fractions as {"_type": "fraction", ...})."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import torch

SOURCES = ["drums", "bass", "other", "vocals"]
# Small enough for a test (about 24k parameters, 0.5 s segments), every part of HTDemucs still there:
# both branches, the cross-domain transformer, the frequency embedding.
TINY = dict(channels=4, depth=3, nfft=512, dconv_comp=2, norm_groups=1, t_layers=1, t_heads=1,
            t_hidden_scale=1.0, segment=Fraction(1, 2))


def _json(value):
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    raise TypeError(f"{type(value)} is not json")


def metadata_of(model) -> dict:
    """The safetensors metadata demucs' export writes for `model` (built with its init arguments recorded)."""
    args, kwargs = model._init_args_kwargs
    klass = type(model)
    return {"klass": f"{klass.__module__}.{klass.__qualname__}", "args": json.dumps(list(args), default=_json),
            "kwargs": json.dumps(kwargs, default=_json)}


def save_model(path: Path, model, metadata: dict | None = None):
    from safetensors.torch import save_file

    tensors = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    save_file(tensors, str(path), metadata=metadata or metadata_of(model))


def tiny_htdemucs(seed: int = 0, sources=SOURCES, **overrides):
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(seed)
    return HTDemucs(list(sources), **{**TINY, **overrides}).eval()


def save_bag(folder: Path, name: str = "htdemucs", models: int = 1, sources=SOURCES, weights=None,
             segment=None, **overrides) -> Path:
    """A bag of `models` tiny random HTDemucs in `folder`: NAME.yaml and one SIG.safetensors each."""
    folder.mkdir(parents=True, exist_ok=True)
    sigs = []
    for i in range(models):
        sig = f"{i:02d}c0ffee"
        save_model(folder / f"{sig}.safetensors", tiny_htdemucs(seed=i, sources=sources, **overrides))
        sigs.append(sig)
    lines = [f"models: {sigs!r}"]
    if weights is not None:
        lines.append(f"weights: {weights!r}")
    if segment is not None:
        lines.append(f"segment: {segment}")
    (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n")
    return folder
