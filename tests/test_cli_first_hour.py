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


def test_score_takes_unquoted_words_as_the_prompt(tmp_path):
    from tunesmith.cli.score import videos_and_prompt
    from tunesmith.errors import InvalidParameter

    reel, clip = tmp_path / "reel.mp4", tmp_path / "clip.mov"
    reel.write_bytes(b"x"), clip.write_bytes(b"x")
    (tmp_path / "pads").mkdir()  # a folder is a word, not a video
    assert videos_and_prompt([str(reel), "pads", "with", "drums"], False) == ([str(reel)], "pads with drums")
    assert videos_and_prompt([str(reel), str(clip), "calm pads"], False) == ([str(reel), str(clip)], "calm pads")
    assert videos_and_prompt([str(reel), str(tmp_path / "pads")], False) == ([str(reel)], str(tmp_path / "pads"))
    assert videos_and_prompt(["missing.mp4", "pads"], False) == (["missing.mp4"], "pads")  # probe says it is missing
    assert videos_and_prompt([str(reel), str(clip)], True) == ([str(reel), str(clip)], None)
    for inputs, track, message in [([str(reel)], False, "then a prompt"),
                                   ([str(reel), str(clip)], False, f"must be the prompt, not a video ({clip})"),
                                   ([str(reel), "pads", str(clip)], False, f"then the prompt: {clip} follows"),
                                   ([str(reel), "pads"], True, "give only videos: pads is not a file")]:
        with pytest.raises(InvalidParameter, match=message.replace("(", r"\(").replace(")", r"\)")):
            videos_and_prompt(inputs, track)


def test_score_usage_reads_videos_then_prompt():
    out = run("score", "--help").stdout
    assert "usage: tunesmith score [options] VIDEO [VIDEO ...] PROMPT ..." in out
    assert "[VIDEO... PROMPT" not in out


def test_score_of_unquoted_words_end_to_end(mono_ckpt, tmp_path):
    from .video.test_score import make_video

    reel = make_video(tmp_path / "reel.mp4", 1.0)
    proc = run("score", reel, "pads", "with", "drums", "-m", mono_ckpt[0], "--seed", "3", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "reel-scored.mp4") and (tmp_path / "reel-scored.mp4").exists()
    assert "pads does not exist" not in proc.stderr
