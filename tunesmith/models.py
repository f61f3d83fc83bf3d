"""One entry point for every model family: load(name_or_path) picks the family from the checkpoint's
files (a transformers MusicGen config.json, a diffusers model_index.json, a stable-audio-tools
model_config.json), never from words in its name."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError, InvalidParameter
from .family import FAMILIES
from .hub import ALIASES, download, layout_of, local_folder, repo_for

MUSICGEN_TYPES = ("musicgen", "musicgen_melody")
DIFFUSERS_FAMILIES = {spec.pipeline: spec.name for spec in FAMILIES.values() if spec.pipeline}


@dataclass(frozen=True)
class ModelSpec:
    """What a request needs to know of a model before it loads: its family and its longest clip."""

    family: str  # "musicgen", "stable_audio" or "acestep"
    longest: float | None  # seconds made at once; None: long pieces window by window (MusicGen)
    folder: Path | None = None  # None for an alias not downloaded yet
    style: bool = False  # takes a style reference (MusicGen-Style)
    turbo: bool = False  # guidance distilled in (ACE-Step turbo): check_request refuses a cfg
    melody: bool = False  # follows a melody (a MusicGen melody checkpoint)


def family_of(folder: Path) -> str:
    """The family of the checkpoint in `folder`, from its files."""
    layout = layout_of(folder)
    if layout == "diffusers":
        try:
            name = json.loads((folder / "model_index.json").read_text()).get("_class_name")
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{folder / 'model_index.json'} cannot be read ({err})") from None
        if name not in DIFFUSERS_FAMILIES:
            raise CheckpointError(f"{folder} holds a diffusers {name}: tunesmith runs "
                                  f"{' and '.join(DIFFUSERS_FAMILIES)} checkpoints")
        return DIFFUSERS_FAMILIES[name]
    if layout == "transformers":
        try:
            model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{folder / 'config.json'} cannot be read ({err})") from None
        if model_type not in MUSICGEN_TYPES:
            raise CheckpointError(f"{folder} holds a transformers '{model_type}' model, not one tunesmith runs "
                                  "(MusicGen, Stable Audio Open)")
    # stable-audio-tools: Stable Audio; audiocraft: MusicGen-Style (the loader refuses other audiocraft models
    # by their xp.cfg); transformers: MusicGen
    sharing = [spec for spec in FAMILIES.values() if layout in spec.layouts]  # Stability's layout: SAO and SA3
    claimed = [spec for spec in sharing if spec.claims and spec.claims_folder(folder)]
    unclaimed = [spec for spec in sharing if not spec.claims]
    if claimed or unclaimed:
        return (claimed or unclaimed)[0].name
    if layout == "demucs":
        raise CheckpointError(f"{folder} holds a Demucs bag, which splits music into stems rather than making it: "
                              "use 'tunesmith stems' or tunesmith.separate")
    raise CheckpointError(f"{folder} holds no checkpoint: a transformers config.json with weights, a diffusers "
                          "model_index.json, or a stable-audio-tools model_config.json with model.safetensors")


def _model_type(folder: Path) -> str | None:
    """config.json's model_type (family_of has read it already, so it is there and readable)."""
    return json.loads((folder / "config.json").read_text()).get("model_type")


def describe(name_or_path: str | Path) -> ModelSpec:
    """The family and longest clip of a model, from its alias or its files: no weights are read, and
    an alias is not downloaded (its folder is None then)."""
    folder = local_folder(name_or_path)
    if folder is None and str(name_or_path) in ALIASES:
        info = ALIASES[str(name_or_path)]
        return ModelSpec(info.family, info.longest, style=info.style, turbo=info.turbo, melody=info.melody)
    if folder is None:
        folder = download(repo_for(str(name_or_path)))
    family = family_of(folder)
    longest, turbo = FAMILIES[family].checkpoint_limits(folder)
    layout = layout_of(folder)
    return ModelSpec(family, longest, folder, style=layout == "audiocraft", turbo=turbo,
                     melody=layout == "transformers" and _model_type(folder) == "musicgen_melody")


def load(name_or_path: str | Path = "small", device: str = "auto", dtype=None, **options):
    """The model for a checkpoint, whatever its family: an alias (`tunesmith models` lists them), a hub
    id, or a local folder. Returns a MusicGen, a StableAudio or an AceStep; all generate(prompts, duration=...,
    seed=..., num_variations=..., loop=..., progress=...) -> list[Clip], and each adds its own options.

    device: "auto" (CUDA, then Apple MPS, then the CPU), "cpu", "cuda" or "mps"; dtype: the precision
    of the generating network (default: the family's choice for the device). options: the family's
    loading options (quantize, threads, lora: LoRA adapters merged at load, README)."""
    from .hub import resolve

    if options.get("lora") is not None:  # a missing or unreadable adapter, or a bad scale, before any download
        from .lora import check_specs

        check_specs(options["lora"])
    folder = resolve(name_or_path)
    spec = FAMILIES[family_of(folder)]
    foreign = sorted(set(options) - set(spec.loading))
    if foreign:
        raise InvalidParameter(f"{foreign[0]} is not a loading option of {spec.display} models "
                               f"(theirs: {', '.join(spec.loading)})")
    model = spec.model_class().from_pretrained(folder, device=device, dtype=dtype, **options)
    model.name = str(name_or_path)
    return model
