"""What a newcomer meets in the first hour with the command (issue 28): mistyped flags and models get the
closest right one, score takes unquoted prompts, folders are created, checks come before loading, the
output check says what to do, limits read as people write them, progress fits a log."""

import pytest

from .test_cli import one_error_line, run


@pytest.mark.parametrize("args, expected", [
    (["generate", "jazz", "--temprature", "1"],
     "unrecognized argument --temprature (did you mean --temperature?) (see 'tunesmith generate --help')"),
    (["generate", "jazz", "--temprature=1"], "(did you mean --temperature?) (see 'tunesmith generate --help')"),
    (["stems", "x.wav", "--shfits", "2"], "(did you mean --shifts?) (see 'tunesmith stems --help')"),
    (["generate", "jazz", "--device", "cdua"], "(did you mean cuda?) (see 'tunesmith generate --help')"),
    (["generat", "jazz"], "(did you mean generate?) (see 'tunesmith --help')"),
    (["generate", "jazz", "--zzzz"], "unrecognized argument --zzzz (see 'tunesmith generate --help')"),
])
def test_a_mistyped_flag_gets_the_closest_and_the_commands_help(args, expected):
    line = one_error_line(run(*args))
    assert line.endswith(expected), line
    assert "did you mean" in expected or "did you mean" not in line


@pytest.mark.parametrize("model, closest", [("smal", "small"), ("stereo-smal", "stereo-small"),
                                            ("acestp", "acestep"), ("sa3-smal", "sa3-small")])
def test_a_mistyped_model_alias_gets_the_closest(model, closest, tmp_path):
    line = one_error_line(run("generate", "jazz", "-m", model, env={"HF_HUB_CACHE": str(tmp_path)}))
    assert f"unknown model '{model}' (did you mean {closest}?)" in line
