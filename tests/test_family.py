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


def test_a_batchs_clips_are_checked_at_once_in_order(monkeypatch):
    """checks_of gives what check_audio gives clip by clip, in the clips' order, the batch on several threads."""
    import itertools
    import threading

    import numpy as np

    from tunesmith import generation
    from tunesmith.audio.checks import check_audio

    rng = np.random.default_rng(0)
    t = np.arange(32000) / 32000
    audios = [(0.3 * np.sin(2 * np.pi * f * t))[None].astype(np.float32) for f in (110, 220, 440)]
    audios += [rng.uniform(-0.5, 0.5, (2, 32000)).astype(np.float32), np.zeros((1, 32000), np.float32)]
    threads, calls, both = set(), itertools.count(), threading.Barrier(2, timeout=30)

    def noted(audio, rate):
        threads.add(threading.get_ident())
        if next(calls) < 2:
            both.wait()  # the first two checks run at the same time, or this times out
        return check_audio(audio, rate)

    monkeypatch.setattr(generation, "check_audio", noted)
    monkeypatch.setattr(generation, "available_cores", lambda: 2)
    assert generation.checks_of(audios, 32000) == [check_audio(a, 32000) for a in audios]
    assert len(threads) == 2 and threading.get_ident() not in threads
    assert generation.checks_of(audios[:1], 32000) == [check_audio(audios[0], 32000)]
