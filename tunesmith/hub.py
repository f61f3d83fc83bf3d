"""Model names -> checkpoint folders: aliases, hub ids (downloaded into the standard Hugging Face
cache, only the files we need) and local folders. HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE and
HF_ENDPOINT are honoured by huggingface_hub itself."""

from __future__ import annotations

import contextlib
import difflib
import logging
import socket
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ModelNotFound, did_you_mean


# The licences of the weights behind the aliases, as their model cards state them: whether a clip may go into
# a paid product depends on them. Short name -> what it allows.
LICENCES = {
    "CC-BY-NC-4.0": "Creative Commons Attribution-NonCommercial 4.0: non-commercial use only",
    "Stability-Community": "Stability AI Community License: commercial use free below US$1M annual revenue, "
                           "an enterprise licence above",
    "MIT": "MIT: any use, the copyright notice kept",
}


@dataclass(frozen=True)
class ModelInfo:
    repo: str
    params: str  # of the generating network (MusicGen's decoder, Stable Audio's and ACE-Step's DiT)
    channels: int
    melody: bool = False  # follows a melody (chroma) as well as text
    style: bool = False  # takes a style reference (MusicGen-Style) as well as text
    family: str = "musicgen"
    sample_rate: int = 32000
    longest: float | None = None  # seconds made at once; None: long pieces window by window
    gated: bool = False  # the hub asks for its licence to be accepted before downloading
    turbo: bool = False  # guidance distilled in (ACE-Step turbo): a cfg is refused before it downloads
    licence: str = "CC-BY-NC-4.0"  # of the weights (LICENCES): MusicGen's are non-commercial


def _sao(repo: str, params: str, longest: float) -> ModelInfo:
    return ModelInfo(repo, params, 2, family="stable_audio", sample_rate=44100, longest=longest, gated=True,
                     licence="Stability-Community")


def _sa3(repo: str, params: str, longest: float, gated: bool) -> ModelInfo:
    return ModelInfo(repo, params, 2, family="stable_audio3", sample_rate=44100, longest=longest, gated=gated,
                     licence="Stability-Community")


def _ace(repo: str, params: str, turbo: bool) -> ModelInfo:
    return ModelInfo(repo, params, 2, family="acestep", sample_rate=48000, longest=600.0, turbo=turbo,
                     licence="MIT")


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
    # audiocraft's layout (state_dict.bin); T5-base and MERT-v1-95M come from their own hub repos.
    "style": ModelInfo("facebook/musicgen-style", "1.5B", 1, style=True),
    # Stable Audio Open: 44.1 kHz stereo; the longest clip is the DiT's sample size (read again on loading).
    "sao-small": _sao("stabilityai/stable-audio-open-small", "341M", 524288 / 44100),
    "sao": _sao("stabilityai/stable-audio-open-1.0", "1.1B", 2097152 / 44100),
    "sao-1.0": _sao("stabilityai/stable-audio-open-1.0", "1.1B", 2097152 / 44100),
    # ACE-Step 1.5 in diffusers' layout (AceStepPipeline): songs with lyrics, 48 kHz stereo, 10 s to 10 min.
    # The official diffusers repositories hold the XL DiT; turbo (8 steps, no guidance) is the default.
    "acestep": _ace("ACE-Step/acestep-v15-xl-turbo-diffusers", "4B", turbo=True),
    "acestep-turbo": _ace("ACE-Step/acestep-v15-xl-turbo-diffusers", "4B", turbo=True),
    "acestep-sft": _ace("ACE-Step/acestep-v15-xl-sft-diffusers", "4B", turbo=False),
    "acestep-base": _ace("ACE-Step/acestep-v15-xl-base-diffusers", "4B", turbo=False),
    "acestep-2b": _ace("Runware/acestep-v15-turbo-diffusers", "2B", turbo=True),  # the 2B turbo, converted by Runware
    # Stable Audio 3, 44.1 kHz stereo, in Stability's layout (the T5Gemma text encoder beside it): the post-trained
    # checkpoints (8 ping-pong steps) ask for their licence to be accepted; -base ones are Euler with guidance.
    # Longest clip: Small 120 s (the reference's sample_size, 5292032 samples), Medium about 380 s.
    "sa3-small": _sa3("stabilityai/stable-audio-3-small-music", "433M", 120.0, gated=True),
    "sa3-small-base": _sa3("stabilityai/stable-audio-3-small-music-base", "433M", 120.0, gated=False),
    "sa3-small-sfx": _sa3("stabilityai/stable-audio-3-small-sfx", "433M", 120.0, gated=True),
    "sa3-small-sfx-base": _sa3("stabilityai/stable-audio-3-small-sfx-base", "433M", 120.0, gated=False),
    "sa3-medium": _sa3("stabilityai/stable-audio-3-medium", "1.4B", 380.0, gated=True),
    "sa3-medium-base": _sa3("stabilityai/stable-audio-3-medium-base", "1.4B", 380.0, gated=True),
}
GATED_REPOS = {info.repo for info in ALIASES.values() if info.gated}
# Demucs bags that split music into stems (tunesmith.separate): one repository each, named as demucs.hf names
# them, holding NAME.yaml (the bag) and one SIG.safetensors per model.
STEM_MODELS = {
    "htdemucs": "adefossez/HTDemucs",
    "htdemucs_ft": "adefossez/HTDemucs-ft",
    "htdemucs_6s": "adefossez/HTDemucs-6s",
}
STEM_LICENCE = "MIT"  # Demucs' weights, as its repository states
DEMUCS_PATTERNS = ["*.yaml", "*.safetensors"]
# The T5 encoders that stable-audio-tools and audiocraft configs name by their original short names; the hub
# moved them under google-t5/.
T5_REPOS = {"t5-small": "google-t5/t5-small", "t5-base": "google-t5/t5-base", "t5-large": "google-t5/t5-large"}

CONFIG_FILES = ["config.json", "generation_config.json"]
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model"]
# Most preferred first: (index file or single file, shard pattern).
WEIGHT_LAYOUTS = [
    ("model.safetensors.index.json", "model-*.safetensors"),
    ("model.safetensors", None),
    ("pytorch_model.bin.index.json", "pytorch_model-*.bin"),
    ("pytorch_model.bin", None),
]


REACH_SECONDS = 2.0  # a hub that answers at all answers a connect in far less


class HubUnavailable(ModelNotFound):
    """A model that is not cached while the hub cannot be used. The message says which and why;
    callers add what to do, which differs between loading and `tunesmith download`."""

    def __init__(self, repo: str, reason: str, offline: bool):
        super().__init__(f"model {repo} is not in the local Hugging Face cache and {reason}")
        self.offline = offline  # HF_HUB_OFFLINE is set (rather than no network)


def licence_of(name: str) -> str | None:
    """The licence of an alias's weights, or of a hub id that an alias names; None for anything else
    (a local folder, another repository: its own model card says)."""
    if name in ALIASES:
        return ALIASES[name].licence
    if name in STEM_MODELS or name in STEM_MODELS.values():
        return STEM_LICENCE
    return next((info.licence for info in ALIASES.values() if info.repo == name), None)


def looks_like_path(name: str) -> bool:
    """A path rather than a hub id: `ckpt/tiny` is one when a folder `ckpt` is here."""
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        return True
    return "/" in name and Path(name.split("/")[0]).is_dir()


def repo_for(name: str) -> str:
    """An alias or hub id -> hub id; anything else is refused with the ways to name a model."""
    if name in ALIASES:
        return ALIASES[name].repo
    if name in STEM_MODELS:
        return STEM_MODELS[name]
    parts = name.split("/")
    if len(parts) == 2 and all(parts) and " " not in name:
        return name
    raise ModelNotFound(
        f"unknown model '{name}'{did_you_mean(name, [*ALIASES, *STEM_MODELS])}: use an alias ({', '.join(ALIASES)}), a hub id such as "
        "facebook/musicgen-small, or the path of a checkpoint folder")


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode() if hasattr(constants, "is_offline_mode") else constants.HF_HUB_OFFLINE)


# The diffusers layout (one folder per part; stable-audio-open-1.0 also carries a 4.8 GB single-file copy at
# its root, which is not fetched) and the stable-audio-tools one (stable-audio-open-small). A part's weights may
# be sharded (ACE-Step's DiT): their index comes too.
DIFFUSERS_PATTERNS = ["model_index.json", "*/config.json", "scheduler/scheduler_config.json", "tokenizer/*",
                      "*/*.safetensors", "*/*.safetensors.index.json"]
TOOLS_PATTERNS = ["model_config.json", "model.safetensors",
                  "t5gemma-b-b-ul2/*"]  # Stable Audio 3's text encoder, where a repository carries it beside
AUDIOCRAFT_FILES = ["state_dict.bin", "compression_state_dict.bin"]  # MusicGen-Style


def layout_of(folder: Path) -> str | None:
    """"diffusers", "stable-audio-tools", "transformers", "audiocraft" (MusicGen-Style) or "demucs" (a stems
    bag) when the folder holds that layout's config and weights, else None."""
    if (folder / "model_index.json").is_file():
        return "diffusers"
    if (folder / "model_config.json").is_file() and (folder / "model.safetensors").is_file():
        return "stable-audio-tools"
    if (folder / "config.json").is_file() and any((folder / f).exists() for f, _ in WEIGHT_LAYOUTS):
        return "transformers"
    if all((folder / f).is_file() for f in AUDIOCRAFT_FILES):
        return "audiocraft"
    if any(folder.glob("*.yaml")) and any(folder.glob("*.safetensors")):
        return "demucs"
    return None


def is_checkpoint(folder: Path) -> bool:
    return layout_of(folder) is not None


def cached_folder(repo: str) -> Path | None:
    """The cached snapshot of `repo` if it holds a config and weights, else None. Never downloads."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo, local_files_only=True))
    except Exception:  # not cached (the error type differs between huggingface_hub versions)
        return None
    return folder if is_checkpoint(folder) else None


def _patterns_for(files: list[str]) -> list[str]:
    if "model_index.json" in files:
        return DIFFUSERS_PATTERNS
    if "model_config.json" in files and "model.safetensors" in files:
        return TOOLS_PATTERNS
    for main, shards in WEIGHT_LAYOUTS:
        if main in files:
            return CONFIG_FILES + TOKENIZER_FILES + [main] + ([shards] if shards else [])
    if all(f in files for f in AUDIOCRAFT_FILES):
        return AUDIOCRAFT_FILES
    if any(f.endswith(".yaml") for f in files) and any(f.endswith(".safetensors") for f in files):
        return DEMUCS_PATTERNS
    raise ModelNotFound("the hub repository holds no checkpoint tunesmith reads (a transformers config.json with "
                        "weights, a diffusers model_index.json, or a stable-audio-tools model_config.json with "
                        "model.safetensors)")


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


def _why_no_hub() -> tuple[str, bool] | None:
    """Why the hub cannot be used now (and whether because of HF_HUB_OFFLINE), or None.

    huggingface_hub retries a refused or unresolvable connection for about 25 s; one short connect
    to the endpoint (or its proxy) says it at once. It runs in a thread so that a resolver that
    never answers is bounded too."""
    if _offline():
        return "HF_HUB_OFFLINE is set", True
    from huggingface_hub import constants

    url = urlsplit(constants.ENDPOINT)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(url.hostname or ""):
        url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    address = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
    outcome = {}

    def connect():
        try:
            socket.create_connection(address, timeout=REACH_SECONDS).close()
            outcome["error"] = None
        except OSError as err:
            outcome["error"] = (err.strerror or str(err) or type(err).__name__).lower()

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(REACH_SECONDS + 0.5)
    error = outcome.get("error", f"no answer in {REACH_SECONDS:g} s")
    return None if error is None else (f"the Hugging Face hub cannot be reached ({url.hostname}: {error})", False)


def download(repo: str) -> Path:
    """Fetch only the needed files of `repo` into the Hugging Face cache, or find them there when
    the hub cannot be used (HubUnavailable when they are not there)."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    why = _why_no_hub()
    if why is None:
        try:
            with _hub_quiet():
                files = HfApi().list_repo_files(repo)
        except GatedRepoError:
            raise ModelNotFound(f"model {repo} is gated: {licence_step(repo)}") from None
        except RepositoryNotFoundError:
            raise ModelNotFound(f"no model {repo} on the Hugging Face hub") from None
        except Exception as err:  # lost on the way (proxy, TLS, server errors): the cache may still serve
            why = f"the Hugging Face hub cannot be reached ({type(err).__name__})", False
    if why is not None:
        folder = cached_folder(repo)
        if folder is None:
            raise HubUnavailable(repo, *why)
        return folder
    try:
        return Path(snapshot_download(repo, allow_patterns=_patterns_for(files)))
    except GatedRepoError:  # the listing of a gated repository is public, its files are not
        raise ModelNotFound(f"model {repo} is gated: {licence_step(repo)}") from None
    except Exception as err:
        raise ModelNotFound(f"download of {repo} failed ({type(err).__name__}: {err})") from None


def licence_step(repo: str) -> str:
    """What a user does once for a gated model."""
    return (f"accept its licence on https://huggingface.co/{repo}, then log in with 'hf auth login' (or set "
            "HF_TOKEN), or pass a local checkpoint folder with -m FOLDER")


def _did_you_mean(name: str, path: Path) -> str:
    try:
        siblings = [p.name for p in path.parent.iterdir() if p.is_dir()]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, siblings, n=1, cutoff=0.5)  # 0.5: "tyni" for "tiny"
    if not close:
        return ""
    typed = name.rstrip("/\\")
    return f" (did you mean {typed[: len(typed) - len(path.name)]}{close[0]}?)"


def local_folder(name_or_path: str | Path) -> Path | None:
    """The local folder `name_or_path` names, or None for an alias or hub id. A name that looks like
    a path and leads nowhere is refused here rather than looked up on the hub."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelNotFound(f"{name} is a file; pass the checkpoint folder that holds config.json")
    if isinstance(name_or_path, Path) or looks_like_path(name):
        raise ModelNotFound(f"no such folder: {name}{_did_you_mean(name, path)}")
    return None


def resolve(name_or_path: str | Path) -> Path:
    """An alias, hub id or folder -> a local checkpoint folder."""
    folder = local_folder(name_or_path)
    if folder is not None:
        return folder
    name = str(name_or_path)
    try:
        return download(repo_for(name))
    except HubUnavailable as err:
        where = "where there is network" + (" (without HF_HUB_OFFLINE)" if err.offline else "")
        repo = repo_for(name)
        if repo in GATED_REPOS:
            raise ModelNotFound(f"{err}: run 'tunesmith download {name}' {where} ({repo} is gated: "
                                f"{licence_step(repo)})") from None
        raise ModelNotFound(f"{err}: run 'tunesmith download {name}' {where}, "
                            f"or pass a local checkpoint folder ({FOLDER_FLAG} FOLDER)") from None


FOLDER_FLAG = "-m"  # how resolve's hint names the flag of a local folder (the model's, in the CLI)


def naming_folder_flag(err: ModelNotFound, flag: str) -> ModelNotFound:
    """resolve's error with its hint naming `flag` for the local folder: a model that is not the command's
    own -m (generate's --stems-model; serve's, for a stems job)."""
    return ModelNotFound(str(err).replace(f"({FOLDER_FLAG} FOLDER)", f"({flag} FOLDER)"))


def beside_or_hub(folder: Path, sub: str, repo: str) -> Path:
    """A part that a checkpoint names (its T5, EnCodec, MERT): the folder `sub` beside the checkpoint's
    files when there is one, else hub repository `repo` (downloaded if need be)."""
    local = folder / sub
    return local if local.is_dir() else resolve(repo)
