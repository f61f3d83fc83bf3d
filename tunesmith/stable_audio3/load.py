"""A Stable Audio 3 folder -> its parts (or only its config, without weights)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from .diffusers_layout import load_diffusers_folder, read_config
from .parts import StableAudio3Parts


def is_diffusers_folder(folder: Path) -> bool:
    return (folder / "model_index.json").is_file()


def checkpoint_limits(folder: Path) -> tuple[float, bool]:
    """(longest clip in seconds, turbo: never) from the checkpoint's config files (the family table's limits)."""
    if is_diffusers_folder(folder):
        return read_config(folder).longest, False
    raise CheckpointError(f"{folder} is not a Stable Audio 3 checkpoint (no model_index.json)")


def load_folder(folder: Path, device: torch.device, dtype: torch.dtype) -> StableAudio3Parts:
    if is_diffusers_folder(folder):
        return load_diffusers_folder(folder, device, dtype)
    raise CheckpointError(f"{folder} is not a Stable Audio 3 checkpoint (no model_index.json)")
