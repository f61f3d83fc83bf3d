"""tunesmith: describe music in words, get a WAV, on your own machine."""

# Process-wide settings that must precede torch's import (environment defaults) belong here, first:
# libgomp reads its variables once, when it loads. A program that imported torch before tunesmith keeps
# libgomp's own waiting (the per-call thread back-off still works).
from .threads import set_openmp_defaults

set_openmp_defaults()

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> the module that defines it. Nothing is imported until a name is first used, so that
# `import tunesmith`, `tunesmith --help` and `tunesmith models` load no torch (diffusers does the same).
_LAZY = {
    "load": "models",
    "describe": "models",
    "MusicGen": "musicgen.model",
    "StableAudio": "stable_audio.model",
    "AceStep": "acestep.model",
    "Clip": "clip",
    "CheckResult": "audio.checks",
    "check_audio": "audio.checks",
    "separate": "stems",
    "Request": "request",
    "check_request": "request",
    "TunesmithError": "errors",
}

__all__ = ["load", "describe", "MusicGen", "StableAudio", "AceStep", "Clip", "CheckResult", "check_audio",
           "separate", "Request", "check_request", "TunesmithError", "__version__"]

if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from .acestep.model import AceStep
    from .audio.checks import CheckResult, check_audio
    from .clip import Clip
    from .errors import TunesmithError
    from .models import describe, load
    from .musicgen.model import MusicGen
    from .request import Request, check_request
    from .stable_audio.model import StableAudio
    from .stems import separate


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tunesmith' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
