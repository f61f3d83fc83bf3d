"""Stems: music split into drums, bass, vocals and the rest by a Demucs bag (load: the safe loader;
separate: segmenting and resampling around demucs' apply_model)."""

from .load import StemModel, load_stem_model
from .separate import separate

__all__ = ["separate", "load_stem_model", "StemModel"]
