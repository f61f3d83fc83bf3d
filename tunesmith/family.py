"""The family table: one FamilySpec per model family, in one place, without torch. load, describe,
family_of and check_request iterate FAMILIES instead of comparing family names; adding a family is
adding a row here and its folder.

A family's own generate options live in its torch-free options module (<family>/options.py): PARAMS, each
option's default (None: the checkpoint's own, read when the model loads) and how the CLI and the server
offer it; check, which check_request runs on them. The CLI's flags and the server's fields are built from
these tables, so adding an option touches its family's options module (and README) only."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .acestep import options as acestep_options
from .musicgen import options as musicgen_options
from .params import API_NAMES, Option, shown_names
from .stable_audio import options as stable_audio_options
from .stable_audio3 import options as stable_audio3_options


@dataclass(frozen=True)
class FamilySpec:
    name: str  # as requests and clips spell it: "musicgen"
    display: str  # as messages and `tunesmith models` write it: "MusicGen"
    model: str  # "module:Class" of its model class, imported when a model loads
    params: dict[str, Option]  # its own generate options: default and how each shell offers them
    check: Callable[..., dict]  # check(Asked, **options) -> the Request's fields of its own, checked
    layouts: tuple[str, ...]  # the checkpoint layouts it loads (hub.layout_of's names)
    inputs: str  # what it is steered by, as `tunesmith models` shows it
    audio_input: Option  # what a request's audio_prompt means to it: the CLI's flag (--continue, --init-audio)
    #   and help, the server's description, mlx-audiogen's field where that route takes it
    other_audio: str  # what the CLI says to another family's audio flag given for this family's model
    pipeline: str | None = None  # the diffusers pipeline class of its diffusers folders
    loading: tuple[str, ...] = ("quantize", "threads")  # load()'s options besides device and dtype
    quantize: tuple[str, ...] = ("int8",)  # load(quantize=)'s values
    quantize_cpu: bool = True  # quantized only on the CPU
    shortest: float | None = None  # seconds: it makes nothing shorter (None: one frame)
    limits: str | None = None  # "module:function" folder -> (longest seconds, turbo), read from config files
    # length(audio_prompt, duration, longest, loop, options) -> (audio_prompt, duration): where the family
    # takes the duration from its audio input (an ACE-Step repaint lasts as long as its song); None: as given
    length: Callable[..., tuple] | None = None
    # meter_prompt(text, Meter) -> the text with tempo and key written in, as the model was trained on them;
    # None: the model takes them as metadata (ACE-Step's caption)
    meter_prompt: Callable | None = None
    # "module:function" (**lora.Fitting.arguments) -> locate(adapter layer name) -> lora.Target or None: how a
    # server checks a job's adapters against a model it loaded before (swap_lora families); None: at run time only
    lora_locator: str | None = None

    @property
    def options(self) -> dict:
        """Its own generate options -> default (None: the checkpoint's own)."""
        return {name: option.default for name, option in self.params.items()}

    @property
    def names(self) -> dict[str, str]:
        """The API's words for the parameters of its requests: 'top_k (--top-k)', its audio input's flag."""
        return {**API_NAMES, "audio_prompt": f"audio_prompt ({self.audio_input.flag})"}
    claims: str | None = None  # "module:function" folder -> bool: its own among folders of a layout it shares
    also_needed: str | None = None  # "module:function" folder -> hub repositories it needs besides its own
    #   (a text encoder kept in a repository of its own), which `tunesmith download` fetches too

    def adapter_locator(self, arguments: dict) -> Callable:
        """Its lora_locator, made for a model of these sizes (lora.Fitting.arguments)."""
        module, name = self.lora_locator.split(":")
        return getattr(importlib.import_module(module, __package__), name)(**arguments)

    def model_class(self) -> type:
        module, name = self.model.split(":")
        return getattr(importlib.import_module(module, __package__), name)

    def checkpoint_limits(self, folder: Path) -> tuple[float | None, bool]:
        """(longest clip in seconds or None, turbo) of the checkpoint in `folder`, from its config files."""
        if self.limits is None:
            return None, False
        module, name = self.limits.split(":")
        return getattr(importlib.import_module(module, __package__), name)(folder)

    def repositories_needed(self, folder: Path) -> list[str]:
        """Hub repositories the checkpoint in `folder` needs besides its own (its also_needed function)."""
        if self.also_needed is None:
            return []
        module, name = self.also_needed.split(":")
        return getattr(importlib.import_module(module, __package__), name)(folder)

    def claims_folder(self, folder: Path) -> bool:
        """Whether the checkpoint in `folder` is this family's, from its config files (a family without a
        claims function takes what no other family claims)."""
        module, name = self.claims.split(":")
        return getattr(importlib.import_module(module, __package__), name)(folder)


FAMILIES = {spec.name: spec for spec in (
    FamilySpec("musicgen", "MusicGen", ".musicgen.model:MusicGen", musicgen_options.PARAMS, musicgen_options.check,
               layouts=("transformers", "audiocraft"), inputs="text",
               audio_input=Option(None, "--continue", "audio", metavar="FILE", about="continues it",
                                  help="continue this audio; the output starts with it and lasts -d seconds in "
                                       "total"),
               other_audio="--init-audio is for Stable Audio models (-m sao-small, sao); MusicGen continues audio "
                           "with --continue FILE",
               quantize=("int8", "int4"), quantize_cpu=False, loading=("quantize", "threads", "lora", "swap_lora"),
               meter_prompt=musicgen_options.meter_prompt, lora_locator=".musicgen.adapters:locator_for"),
    FamilySpec("stable_audio", "Stable Audio", ".stable_audio.model:StableAudio", stable_audio_options.PARAMS,
               stable_audio_options.check, layouts=("diffusers", "stable-audio-tools"), inputs="text + audio",
               audio_input=Option(None, "--init-audio", "audio", metavar="FILE", compat="reference_audio_path",
                                  about="starts from it",
                                  help="start from this sound (audio-to-audio); --strength says how far to move"),
               other_audio="Stable Audio models do not continue audio: start from it with --init-audio FILE (and "
                           "--strength)",
               pipeline="StableAudioPipeline", limits=".stable_audio.load:checkpoint_limits",
               also_needed=".stable_audio.load:also_needed", meter_prompt=stable_audio_options.meter_prompt),
    FamilySpec("acestep", "ACE-Step", ".acestep.model:AceStep", acestep_options.PARAMS, acestep_options.check,
               layouts=("diffusers",), inputs="text + lyrics + song",
               audio_input=Option(None, "--init-audio", "audio", metavar="FILE", about="repaints it",
                                  help="the song to repaint (with --repaint)"),
               other_audio="ACE-Step models do not continue audio: make a span of a song anew with --init-audio "
                           "FILE --repaint START:END",
               pipeline="AceStepPipeline", shortest=acestep_options.SHORTEST,
               limits=".acestep.layout:checkpoint_limits", length=acestep_options.song_length,
               loading=("quantize", "threads", "lora", "swap_lora"), lora_locator=".acestep.adapters:locator"),
    FamilySpec("stable_audio3", "Stable Audio 3", ".stable_audio3.model:StableAudio3", stable_audio3_options.PARAMS,
               stable_audio3_options.check, layouts=("diffusers", "stable-audio-tools"), inputs="text + audio",
               audio_input=Option(None, "--init-audio", "audio", metavar="FILE", compat="reference_audio_path",
                                  about="starts from it or repaints it",
                                  help="start from this sound: --strength says how far to move, or --repaint "
                                       "START:END makes spans of it anew"),
               other_audio="Stable Audio 3 models start from audio with --init-audio FILE and extend it with "
                           "--continue FILE -d TOTAL",
               pipeline="StableAudio3Pipeline", loading=("quantize", "threads", "lora", "swap_lora"),
               limits=".stable_audio3.load:checkpoint_limits", length=stable_audio3_options.clip_length,
               claims=".stable_audio3.stability_layout:is_stable_audio3", also_needed=".stable_audio3.load:also_needed",
               meter_prompt=stable_audio_options.meter_prompt),  # tempo and key as Stable Audio Open's captions
)}
API_NAMES.update(shown_names(*(spec.params for spec in FAMILIES.values())))
