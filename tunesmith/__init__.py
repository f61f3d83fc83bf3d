"""tunesmith: describe music in words, get a WAV, on your own machine."""

from .acestep.model import AceStep
from .musicgen.model import MusicGen
from .audio.checks import CheckResult, check_audio
from .clip import Clip
from .errors import TunesmithError
from .models import load
from .stable_audio.model import StableAudio
from .stems import separate

__version__ = "0.1.0"
__all__ = ["load", "MusicGen", "StableAudio", "AceStep", "Clip", "CheckResult", "check_audio", "separate",
           "TunesmithError", "__version__"]
