"""A Stable Audio Open folder in either layout -> its parts (or only its config, without weights)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from ..hub import T5_REPOS, beside_or_hub
from .diffusers_layout import is_diffusers_folder, load_diffusers_folder
from .diffusers_layout import read_config as read_diffusers_config
from .parts import StableAudioConfig, StableAudioParts

TOOLS_CONFIG = "model_config.json"


def is_tools_folder(folder: Path) -> bool:
    return (folder / TOOLS_CONFIG).is_file()


def read_config(folder: Path) -> StableAudioConfig:
    if is_diffusers_folder(folder):
        return read_diffusers_config(folder)
    if is_tools_folder(folder):
        from .tools_layout import read_tools_config, tools_config

        return tools_config(read_tools_config(folder))
    raise CheckpointError(f"{folder} is not a Stable Audio checkpoint (no model_index.json or {TOOLS_CONFIG})")


def checkpoint_limits(folder: Path) -> tuple[float, bool]:
    """(longest clip in seconds, turbo: never) from the checkpoint's config files (the family table's limits)."""
    return read_config(folder).max_seconds, False


def text_encoder_folder(folder: Path, name: str) -> Path:
    """The T5 that a stable-audio-tools config names: a folder beside the checkpoint, or the hub's."""
    return beside_or_hub(folder, name, T5_REPOS.get(name, name))


def load_folder(folder: Path, device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype) -> StableAudioParts:
    if is_diffusers_folder(folder):
        return load_diffusers_folder(folder, device, dtype, vae_dtype)
    if is_tools_folder(folder):
        from .tools_layout import load_tools_folder, read_tools_config, text_encoder_name

        config = read_tools_config(folder)
        t5 = text_encoder_folder(folder, text_encoder_name(config))
        return load_tools_folder(folder, t5, device, dtype).to(device, dtype, vae_dtype)
    raise CheckpointError(f"{folder} is not a Stable Audio checkpoint (no model_index.json or {TOOLS_CONFIG})")


def also_needed(folder: Path) -> list[str]:
    """Hub repositories a checkpoint needs besides its own: a stable-audio-tools T5 that is not beside it."""
    if not is_tools_folder(folder):
        return []
    from .tools_layout import read_tools_config, text_encoder_name

    name = text_encoder_name(read_tools_config(folder))
    return [] if (folder / name).is_dir() else [T5_REPOS.get(name, name)]
