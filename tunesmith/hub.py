"""Model names -> checkpoint folders: aliases, hub ids (downloaded into the standard Hugging Face
cache, only the files we need) and local folders. HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE are
honoured by huggingface_hub itself."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelNotFound


@dataclass(frozen=True)
class ModelInfo:
    repo: str
    params: str
    channels: int
    melody: bool = False  # follows a melody (chroma) as well as text


ALIASES = {
    "small": ModelInfo("facebook/musicgen-small", "300M", 1),
    "medium": ModelInfo("facebook/musicgen-medium", "1.5B", 1),
    "large": ModelInfo("facebook/musicgen-large", "3.3B", 1),
    "stereo-small": ModelInfo("facebook/musicgen-stereo-small", "300M", 2),
    "stereo-medium": ModelInfo("facebook/musicgen-stereo-medium", "1.5B", 2),
    "stereo-large": ModelInfo("facebook/musicgen-stereo-large", "3.3B", 2),
    "melody": ModelInfo("facebook/musicgen-melody", "1.5B", 1, melody=True),
    "melody-large": ModelInfo("facebook/musicgen-melody-large", "3.3B", 1, melody=True),
    "stereo-melody": ModelInfo("facebook/musicgen-stereo-melody", "1.5B", 2, melody=True),
    "stereo-melody-large": ModelInfo("facebook/musicgen-stereo-melody-large", "3.3B", 2, melody=True),
}

CONFIG_FILES = ["config.json", "generation_config.json"]
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model"]
# Most preferred first: (index file or single file, shard pattern).
WEIGHT_LAYOUTS = [
    ("model.safetensors.index.json", "model-*.safetensors"),
    ("model.safetensors", None),
    ("pytorch_model.bin.index.json", "pytorch_model-*.bin"),
    ("pytorch_model.bin", None),
]


def looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def repo_for(name: str) -> str:
    """An alias or hub id -> hub id; anything else is refused with the ways to name a model."""
    if name in ALIASES:
        return ALIASES[name].repo
    parts = name.split("/")
    if len(parts) == 2 and all(parts) and " " not in name:
        return name
    raise ModelNotFound(
        f"unknown model '{name}': use an alias ({', '.join(ALIASES)}), a hub id such as "
        "facebook/musicgen-small, or the path of a checkpoint folder")


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode() if hasattr(constants, "is_offline_mode") else constants.HF_HUB_OFFLINE)


def _has_weights(folder: Path) -> bool:
    return (folder / "config.json").exists() and any((folder / f).exists() for f, _ in WEIGHT_LAYOUTS)


def cached_folder(repo: str) -> Path | None:
    """The cached snapshot of `repo` if it holds a config and weights, else None. Never downloads."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # not cached (the error type differs between huggingface_hub versions)
        return None
    return folder if _has_weights(folder) else None


def _patterns_for(files: list[str]) -> list[str]:
    for main, shards in WEIGHT_LAYOUTS:
        if main in files:
            return CONFIG_FILES + TOKENIZER_FILES + [main] + ([shards] if shards else [])
    raise ModelNotFound("the hub repository holds no model.safetensors or pytorch_model.bin: not a MusicGen checkpoint")


@contextlib.contextmanager
def _hub_quiet():
    """huggingface_hub logs each network retry; our error line says what matters."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def download(repo: str) -> Path:
    """Fetch only the needed files of `repo` into the Hugging Face cache (or find them there)."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    if _offline():
        folder = cached_folder(repo)
        if folder is None:
            raise ModelNotFound(
                f"model {repo} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: run "
                f"'tunesmith download {repo}' where there is network, or pass a local checkpoint folder")
        return folder
    try:
        with _hub_quiet():
            files = HfApi().list_repo_files(repo)
    except GatedRepoError:
        raise ModelNotFound(f"model {repo} is gated on the hub: accept its terms there and log in "
                            "with 'hf auth login'") from None
    except RepositoryNotFoundError:
        raise ModelNotFound(f"no model {repo} on the Hugging Face hub") from None
    except Exception as err:  # no network, DNS, proxy...: fall back to the cache if it has the model
        folder = cached_folder(repo)
        if folder is not None:
            return folder
        raise ModelNotFound(f"cannot reach the Hugging Face hub to download {repo} ({type(err).__name__}); "
                            "connect to the network, or pass a local checkpoint folder") from None
    try:
        return Path(snapshot_download(repo, allow_patterns=_patterns_for(files)))
    except Exception as err:
        raise ModelNotFound(f"download of {repo} failed ({type(err).__name__}: {err})") from None


def resolve(name_or_path: str | Path) -> Path:
    """An alias, hub id or folder -> a local checkpoint folder."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelNotFound(f"{name} is a file; pass the checkpoint folder that holds config.json")
    if isinstance(name_or_path, Path) or looks_like_path(name):
        raise ModelNotFound(f"folder {name} does not exist")
    return download(repo_for(name))
