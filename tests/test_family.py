"""The family table agrees with the model classes it names: their family, generate's own options and
from_pretrained's loading options."""

from __future__ import annotations

import inspect

from tunesmith.family import FAMILIES
from tunesmith.hub import ALIASES
from tunesmith.params import METER
from tunesmith.request import FAMILY_NAMES, OPTIONS

# what every family's generate takes besides its own options: tempo, key, meter and bars too
COMMON = {"self", "prompts", "duration", "seed", "num_variations", "audio_prompt", "loop", "progress", *METER}


def test_each_row_names_its_model_class_options_and_loading_options():
    for name, spec in FAMILIES.items():
        cls = spec.model_class()
        assert cls.family == spec.name == name
        assert set(inspect.signature(cls.generate).parameters) - COMMON == set(spec.options)
        assert set(spec.loading) <= set(inspect.signature(cls.from_pretrained).parameters)


def test_the_request_reads_the_table():
    assert FAMILY_NAMES == {name: spec.display for name, spec in FAMILIES.items()}
    assert OPTIONS == {name: spec.options for name, spec in FAMILIES.items()}
    assert {info.family for info in ALIASES.values()} == set(FAMILIES)
    pipelines = [spec.pipeline for spec in FAMILIES.values() if spec.pipeline]
    assert len(pipelines) == len(set(pipelines)) == 3


def test_each_option_is_a_flag_and_a_field_from_the_table():
    """The CLI's flags and POST /api/jobs's fields are built from the family table: every family option is
    one (an option several families share, once)."""
    import pytest

    from tunesmith.cli.parser import build_parser

    generate = build_parser(["generate"])._subparsers._group_actions[0].choices["generate"]
    flags = {s for action in generate._actions for s in action.option_strings}
    for spec in FAMILIES.values():
        assert {o.flag for o in spec.params.values()} | {spec.audio_input.flag} <= flags, spec.name
    assert {o.flag for o in METER.values()} == {"--bpm", "--key", "--time-signature", "--bars"} and "--lora" in flags
    assert {o.flag for o in METER.values()} <= flags
    pytest.importorskip("fastapi")
    from tunesmith.server.bodies import JobIn

    assert {o.field or name for spec in FAMILIES.values() for name, o in spec.params.items()} <= set(JobIn.model_fields)
    assert set(METER) <= set(JobIn.model_fields)
