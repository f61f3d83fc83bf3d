"""One default per thing: the API's signatures, check_request (the CLI's and the server's path) and the
CLI's help all read the same constants."""

from __future__ import annotations

import inspect

import pytest

from tunesmith.musicgen.options import CONTEXT, SamplingParams
from tunesmith.request import DEFAULT_DURATION, check_request


def test_musicgen_generate_defaults_are_the_requests():
    from tunesmith import MusicGen

    params = inspect.signature(MusicGen.generate).parameters
    request = check_request("jazz")
    assert request.sampling == SamplingParams() and request.context == CONTEXT == params["context"].default
    assert {k: params[k].default for k in ("temperature", "top_k", "top_p", "cfg")} == {
        "temperature": SamplingParams.temperature, "top_k": SamplingParams.top_k, "top_p": SamplingParams.top_p,
        "cfg": SamplingParams.cfg}
    # None: DEFAULT_DURATION, unless bars (with bpm) set the length
    assert params["duration"].default is None and request.duration == DEFAULT_DURATION


@pytest.mark.parametrize("family", ["musicgen", "stable_audio", "acestep"])
def test_every_family_defaults_to_one_duration(family):
    """Every API leaves duration None, as the CLI and the server do: DEFAULT_DURATION, unless bars set it."""
    from tunesmith import AceStep, MusicGen, StableAudio

    for model in (AceStep, MusicGen, StableAudio):
        assert inspect.signature(model.generate).parameters["duration"].default is None
    assert check_request("song", family=family, duration=None, longest=600.0).duration == DEFAULT_DURATION


def test_the_cli_help_states_the_same_defaults(capsys):
    from tunesmith.cli import main

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {SamplingParams.top_k})" in text and f"(default: {CONTEXT:g})" in text
