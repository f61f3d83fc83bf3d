"""tunesmith: describe music in words, get a WAV, on your own machine."""

from .api import MusicGen
from .audio.checks import CheckResult, check_audio
from .clip import Clip
from .errors import TunesmithError

__version__ = "0.1.0"
__all__ = ["MusicGen", "Clip", "CheckResult", "check_audio", "TunesmithError", "__version__"]
