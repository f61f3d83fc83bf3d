"""The family table: one FamilySpec per model family, in one place, without torch. load, describe,
family_of and check_request iterate FAMILIES instead of comparing family names; adding a family is
adding a row here and its folder.

A family's own generate options and their defaults live in its torch-free options module
(<family>/options.py; None: the checkpoint's own default, read when the model loads)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .acestep import options as acestep_options
from .musicgen import options as musicgen_options
from .stable_audio import options as stable_audio_options


@dataclass(frozen=True)
class FamilySpec:
    name: str  # as requests and clips spell it: "musicgen"
    display: str  # as messages and `tunesmith models` write it: "MusicGen"
    model: str  # "module:Class" of its model class, imported when a model loads
    options: dict  # its own generate options -> default (None: the checkpoint's own)
    layouts: tuple[str, ...]  # the checkpoint layouts it loads (hub.layout_of's names)
    inputs: str  # what it is steered by, as `tunesmith models` shows it
    audio_input: str  # what a request's audio_prompt means to it
    pipeline: str | None = None  # the diffusers pipeline class of its diffusers folders
    loading: tuple[str, ...] = ("quantize", "threads")  # load()'s options besides device and dtype
    shortest: float | None = None  # seconds: it makes nothing shorter (None: one frame)
    limits: str | None = None  # "module:function" folder -> (longest seconds, turbo), read from config files
    meter_prompt: Callable | None = None  # (text, Meter) -> the text with tempo and key written in, as the model
    #                                       was trained on them; None: the model takes them as metadata

    def model_class(self) -> type:
        module, name = self.model.split(":")
        return getattr(importlib.import_module(module, __package__), name)

    def checkpoint_limits(self, folder: Path) -> tuple[float | None, bool]:
        """(longest clip in seconds or None, turbo) of the checkpoint in `folder`, from its config files."""
        if self.limits is None:
            return None, False
        module, name = self.limits.split(":")
        return getattr(importlib.import_module(module, __package__), name)(folder)


FAMILIES = {spec.name: spec for spec in (
    FamilySpec("musicgen", "MusicGen", ".musicgen.model:MusicGen", musicgen_options.OPTIONS,
               layouts=("transformers", "audiocraft"), inputs="text", audio_input="audio to continue",
               loading=("quantize", "threads", "lora"), meter_prompt=musicgen_options.meter_prompt),
    FamilySpec("stable_audio", "Stable Audio", ".stable_audio.model:StableAudio", stable_audio_options.OPTIONS,
               layouts=("diffusers", "stable-audio-tools"), inputs="text + audio",
               audio_input="an init audio to start from", pipeline="StableAudioPipeline",
               limits=".stable_audio.load:checkpoint_limits", meter_prompt=stable_audio_options.meter_prompt),
    FamilySpec("acestep", "ACE-Step", ".acestep.model:AceStep", acestep_options.OPTIONS,
               layouts=("diffusers",), inputs="text + lyrics + song", audio_input="a song to repaint",
               pipeline="AceStepPipeline", shortest=acestep_options.SHORTEST, limits=".acestep.layout:checkpoint_limits",
               loading=("quantize", "threads", "lora")),
)}
