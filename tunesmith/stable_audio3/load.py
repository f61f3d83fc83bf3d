"""A Stable Audio 3 folder in either layout -> its parts (or only its limits, without weights)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from .parts import StableAudio3Parts


def is_diffusers_folder(folder: Path) -> bool:
    return (folder / "model_index.json").is_file()


def _not_ours(folder: Path) -> CheckpointError:
    return CheckpointError(f"{folder} is not a Stable Audio 3 checkpoint (no model_index.json, or a "
                           "model_config.json without a T5Gemma conditioner)")


def checkpoint_limits(folder: Path) -> tuple[float, bool]:
    """(longest clip in seconds, turbo: never) from the checkpoint's config files (the family table's limits)."""
    from . import diffusers_layout, stability_layout

    if is_diffusers_folder(folder):
        return diffusers_layout.read_config(folder).longest, False
    if stability_layout.is_stable_audio3(folder):
        return stability_layout.checkpoint_limits(folder)
    raise _not_ours(folder)


def load_folder(folder: Path, device: torch.device, dtype: torch.dtype) -> StableAudio3Parts:
    from . import diffusers_layout, stability_layout

    if is_diffusers_folder(folder):
        return diffusers_layout.load_diffusers_folder(folder, device, dtype)
    if stability_layout.is_stable_audio3(folder):
        return stability_layout.load_stability_folder(folder, device, dtype)
    raise _not_ours(folder)


def also_needed(folder: Path) -> list[str]:
    """Hub repositories a checkpoint needs besides its own: the T5Gemma of a Stability-layout folder that
    does not carry it beside its weights (diffusers folders hold every part)."""
    from . import stability_layout

    if is_diffusers_folder(folder) or not stability_layout.is_stable_audio3(folder):
        return []
    raw = stability_layout.read_raw_config(folder)
    prompt = stability_layout.prompt_config(raw, folder)
    sub = prompt.get("subfolder") or stability_layout.T5GEMMA_FOLDER
    return [] if (folder / sub).is_dir() else [prompt.get("model_name", stability_layout.T5GEMMA_REPO)]
