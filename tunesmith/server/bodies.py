"""The JSON bodies the routes take, and the server's names for request parameters.

POST /api/jobs (JobIn) takes every option of every family: its fields are built from the family table
(tunesmith/family.py, each family's options module), so a new option is a new field without an edit here.
mlx-audiogen's POST /api/generate (GenerateIn) keeps that project's field names; each option's `compat`
says which of them it is. A refusal names the field the client sent (job_names, compat_names)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StringConstraints,
                      create_model)
from pydantic import field_validator
from pydantic_core import PydanticCustomError

from ..audio.formats import FORMATS, WAV_FORMATS
from ..family import FAMILIES, FamilySpec
from ..params import COMMON, METER, Option, text_problem
from .schema import mark_texts

# Numbers are JSON numbers: true, "10" are refused (pydantic's lax mode took them); an int is a float too,
# and 175.0 an integer, as JSON Schema counts them.
Number = StrictFloat
Whole = Annotated[StrictInt, BeforeValidator(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)]


def _meter(value):
    """3 or "3/4" (audio.meter checks which, with the rest of the request); anything else one line."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, str) and len(value) > 10):
        raise PydanticCustomError("meter_type", "a meter as written, \"3/4\", or its beats a bar, 3")
    return value


Meter = Annotated[Union[int, Annotated[str, StringConstraints(max_length=10)]], BeforeValidator(_meter)]
Flag = StrictBool

UPLOAD_ID = 100  # characters of an upload's id, at most


class Body(BaseModel):
    """What every body shares: each text in it, however deep (a schedule's), is text (params.text_problem),
    checked before the field's own rules so every field refuses it alike."""

    model_config = ConfigDict(json_schema_extra=mark_texts)

    @field_validator("*", mode="before")
    @classmethod
    def _texts(cls, value):
        for text in _texts_in(value):
            problem = text_problem(text)
            if problem:
                raise PydanticCustomError("not_text", problem)
        return value


def _texts_in(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple, dict)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _texts_in(item)


class GenerateIn(Body):
    """mlx-audiogen's POST /api/generate body. Unknown keys are ignored; each family takes its own fields
    and ignores the other's (its clients send both)."""

    model_config = ConfigDict(extra="ignore")
    model: str = Field("musicgen", max_length=500, description='"musicgen", "stable_audio" or a registered name')
    prompt: str = Field(..., max_length=100_000)
    seconds: Number = 5.0
    temperature: Optional[Number] = None
    top_k: Optional[Whole] = None
    guidance_coef: Optional[Number] = Field(None, description="MusicGen's cfg")
    seed: Optional[Whole] = Field(None, description="none or negative: random")
    melody_path: Optional[str] = Field(None, max_length=4096, description="a file under a --media-dir")
    style_audio_path: Optional[str] = Field(None, max_length=4096, description="MusicGen-Style: a reference "
                                                                                "file under a --media-dir")
    style_coef: Optional[Number] = Field(None, description="MusicGen-Style's cfg_beta (with text and style)")
    negative_prompt: Optional[str] = Field(None, max_length=100_000)
    steps: Optional[Whole] = None
    cfg_scale: Optional[Number] = Field(None, description="Stable Audio's cfg")
    sampler: Optional[str] = Field(None, max_length=100)
    reference_audio_path: Optional[str] = Field(None, max_length=4096, description="Stable Audio: init audio")
    reference_strength: Optional[Number] = None
    lora: Optional[Union[Annotated[str, Field(max_length=500)], list[Annotated[str, Field(max_length=500)]]]] = Field(
        None, description="NAME or NAME@SCALE of GET /api/loras, or a list of them (stacked in order); never a path")
    output_mode: Optional[str] = Field(None, max_length=100, description='"audio" only')


def family_options() -> dict[str, Option]:
    """Every family's options by name, in the table's order (an option several families share: the first's)."""
    options: dict[str, Option] = {}
    for spec in FAMILIES.values():
        for name, option in spec.params.items():
            options.setdefault(name, option)
    return options


# Each kind of option value (tunesmith.params.KINDS) as a JSON field: an audio input is an upload's id.
KIND_TYPES = {"number": Number, "seconds": Number, "whole": Whole, "text": str, "textfile": str, "audio": str,
              "span": tuple[Number, Optional[Number]],
              "spans": Union[tuple[Number, Optional[Number]], list[tuple[Number, Optional[Number]]]],
              "meter": Meter}


def field_of(name: str, option: Option) -> str:
    """A family option's field in POST /api/jobs: its name, or its Option's `field` (Stable Audio 3's
    continuation is `extend`: `continuation` is every family's audio input there)."""
    return option.field or name


def _option_field(name: str, option: Option) -> tuple:
    owned = [spec.params[name] for spec in FAMILIES.values() if name in spec.params]
    families = [spec.display for spec in FAMILIES.values() if name in spec.params]
    if any(o.kind == "spans" for o in owned):  # one span or several: the field takes both
        option = Option(kind="spans", about="; ".join(dict.fromkeys(o.about for o in owned if o.about)))
    limits = {"max_length": UPLOAD_ID if option.kind == "audio" else option.max_length}
    return (Optional[KIND_TYPES[option.kind]],
            Field(None, description=option.about or ", ".join(families),
                  **{k: v for k, v in limits.items() if v is not None}))


class _JobCommon(Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra=mark_texts)
    model: Optional[str] = Field(None, max_length=500, description="a registered name; none: the default")
    prompt: Union[str, list[tuple[Number, str]]] = Field(
        ..., description='a text, or a schedule [[0, "calm intro"], [20, "drums enter"]]')
    duration: Optional[Number] = Field(None, description="seconds (default 10; an ACE-Step repaint lasts as long as "
                                                        "its song: leave it out)")
    seed: Optional[Whole] = Field(None, description="none: random (the job reports it)")
    variations: Whole = 1
    loop: Flag = False


_AUDIO = ", ".join(f"{spec.display} {spec.audio_input.about}" for spec in FAMILIES.values())
JobIn = create_model(
    "JobIn", __base__=_JobCommon, __doc__="POST /api/jobs: everything `tunesmith generate` takes. Options of "
                                          "another family are refused.",
    **{name: _option_field(name, option) for name, option in METER.items()},
    **{field_of(name, option): _option_field(name, option) for name, option in family_options().items()},
    lora=(Optional[Union[str, list[str]]], Field(None, description="NAME or NAME@SCALE from GET /api/loras, or a list "
                                                 "of them stacked in order ([]: none); none given: the server's "
                                                 "--lora set. Jobs of one set batch together")),
    continuation=(Optional[str], Field(None, max_length=UPLOAD_ID, description=f"an upload id: {_AUDIO}")),
    fade_in=(Optional[Number], None),
    fade_out=(Optional[Number], None),
    loudness=(Optional[Number], Field(None, description="LUFS target, e.g. -14")),
    ceiling=(Optional[Number], Field(None, description="true-peak ceiling in dBTP (default -1)")),
    format=(Literal[FORMATS], "wav"),
    wav_format=(Literal[WAV_FORMATS], "pcm16"),
)


class StemsIn(Body):
    """POST /api/jobs/{id}/stems: split a done job's clip into stems, as a job of its own."""

    model_config = ConfigDict(extra="forbid")
    model: Optional[str] = Field(None, max_length=100, description="a stems model this server offers (GET "
                                                                    "/api/models lists them); none: the first")
    index: Whole = Field(0, ge=0, le=1000, description="which clip of the job (its variations)")
    two_stems: Optional[str] = Field(None, max_length=40, description='e.g. "vocals": vocals and no_vocals')
    shifts: Whole = Field(1, ge=0, le=10, description="passes at random offsets, averaged: better, slower")
    format: Optional[Literal[FORMATS]] = Field(None, description="default: the job's")
    wav_format: Literal[WAV_FORMATS] = "pcm16"


def job_names() -> dict[str, str]:
    """API keyword -> POST /api/jobs field, where they differ (prompts -> prompt, audio_prompt -> continuation)."""
    tables = [COMMON, *(spec.params for spec in FAMILIES.values())]
    return {name: option.field for table in tables for name, option in table.items() if option.field}


def compat_names(spec: FamilySpec) -> dict[str, str]:
    """API keyword -> mlx-audiogen's POST /api/generate field for a model of this family (duration -> seconds,
    MusicGen's cfg -> guidance_coef, Stable Audio's -> cfg_scale, ...)."""
    names = {name: option.compat for name, option in {**COMMON, **spec.params}.items() if option.compat}
    if spec.audio_input.compat:
        names["audio_prompt"] = spec.audio_input.compat
    return names
