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


@pytest.mark.slow
def test_score_of_unquoted_words_end_to_end(mono_ckpt, tmp_path):
    from .video.test_score import make_video

    reel = make_video(tmp_path / "reel.mp4", 1.0)
    proc = run("score", reel, "pads", "with", "drums", "-m", mono_ckpt[0], "--seed", "3", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "reel-scored.mp4") and (tmp_path / "reel-scored.mp4").exists()
    assert "pads does not exist" not in proc.stderr


@pytest.mark.slow
def test_an_output_folder_is_made_for_generate_and_score(mono_ckpt, tmp_path):
    from .video.test_score import make_video

    proc = run("generate", "jazz", "-m", mono_ckpt[0], "-d", "0.3", "--seed", "4", "--quiet", "-o", "new/",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "new/jazz-4.wav" and (tmp_path / "new" / "jazz-4.wav").is_file()
    line = one_error_line(run("generate", "jazz", "-m", mono_ckpt[0], "-o", "a/b/", cwd=tmp_path))
    assert "output folder a/b does not exist, nor does its parent" in line and not (tmp_path / "a").exists()

    reel = make_video(tmp_path / "reel.mp4", 1.0)
    proc = run("score", reel, "calm", "pads", "-m", mono_ckpt[0], "--seed", "3", "--quiet", "--threads", "1",
               "--bpm", "90", "--key", "C minor", "-o", f"{tmp_path}/scored/")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "scored" / "reel-scored.mp4").is_file()


def test_score_takes_generates_model_flags():
    out = run("score", "--help").stdout
    for flag in ("--threads", "--bpm", "--key", "--time-signature", "--context", "--lyrics", "--language",
                 "--temperature", "--steps", "--quantize", "--lora"):
        assert flag in out, flag
    assert "--bars" not in out  # the video sets the length


def _without_weights(ckpt, tmp_path):
    """The checkpoint's folder with its weights cut short: what loads fails, what only reads config works."""
    import shutil

    folder = tmp_path / "cut"
    shutil.copytree(ckpt, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    return folder


def test_a_melody_for_a_model_without_melodies_is_refused_before_loading(mono_ckpt, tmp_path):
    import numpy as np
    import soundfile as sf

    tune = tmp_path / "tune.wav"
    sf.write(str(tune), 0.3 * np.sin(np.arange(16000) / 16000 * 2 * np.pi * 440), 16000)
    line = one_error_line(run("generate", "jazz", "-m", _without_weights(mono_ckpt[0], tmp_path), "--melody", tune))
    assert "--melody: " in line and "cannot follow a melody" in line and "-m melody" in line
    line = one_error_line(run("generate", "jazz", "-m", "small", "--melody", tune, env={"HF_HUB_CACHE": str(tmp_path)}))
    assert "small cannot follow a melody" in line  # an alias is known without its download
    line = one_error_line(run("generate", "jazz", "-m", "small", "--style", tune, env={"HF_HUB_CACHE": str(tmp_path)}))
    assert "cannot take a style reference" in line and "-m style" in line


def test_an_unwritable_output_folder_is_refused_before_generating(mono_ckpt, tmp_path):
    """/proc takes no files, even from root (os.access says it may): refused before the model loads."""
    line = one_error_line(run("generate", "jazz", "-m", _without_weights(mono_ckpt[0], tmp_path), "-o",
                              "/proc/out.wav"))
    assert line.startswith("tunesmith: error: cannot write /proc/out.wav: /proc takes no new files"), line
    assert not list(tmp_path.glob("*.probe")) and not list(tmp_path.glob(".tunesmith-*"))


def _dc_offset(monkeypatch):
    """Every clip the tiny MusicGen makes fails its check with a DC offset of 0.12."""
    import numpy as np

    from tunesmith import generation
    from tunesmith.audio.checks import check_audio

    def offset(audio, rate):  # a tone on 0.12 in the clip's shape: only its offset is wrong
        tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(audio.shape[-1]) / rate)
        return check_audio(np.broadcast_to(tone + 0.12, audio.shape).astype(np.float32), rate)

    monkeypatch.setattr(generation, "check_audio", offset)  # where every family's clips are checked


@pytest.mark.parametrize("strict, tail, status", [(False, ", or --strict to make this an error", 0),
                                                  (True, " (--strict: exit status 3)", 3)])
def test_a_failed_output_check_says_why_and_what_to_do(mono_ckpt, tmp_path, monkeypatch, capsys, strict, tail,
                                                       status):
    import tunesmith.cli as cli

    _dc_offset(monkeypatch)
    out = tmp_path / "x.wav"
    args = ["generate", "jazz", "-m", str(mono_ckpt[0]), "-d", "0.3", "--seed", "1", "--quiet", "-o", str(out)]
    assert cli.main(args + ["--strict"] * strict) == status and out.exists()
    lines = capsys.readouterr().err.splitlines()
    expected = (f"tunesmith: {out} failed the output check: DC offset 0.12: the file was kept; try another "
                f"seed{tail}")
    assert expected in lines, lines


def test_the_offline_stems_hint_names_the_stems_flag(mono_ckpt, tmp_path):
    env = {"HF_HUB_CACHE": str(tmp_path / "empty")}
    line = one_error_line(run("generate", "jazz", "-m", mono_ckpt[0], "--stems", cwd=tmp_path, env=env))
    assert "tunesmith download htdemucs" in line and line.endswith("(--stems-model FOLDER)"), line
    import numpy as np
    import soundfile as sf

    sf.write(str(tmp_path / "song.wav"), 0.3 * np.sin(np.arange(16000) / 10), 16000)
    line = one_error_line(run("stems", tmp_path / "song.wav", cwd=tmp_path, env=env))
    assert line.endswith("(-m FOLDER)"), line  # stems' own model flag


def test_limits_are_rounded_for_people():
    from tunesmith.errors import InvalidParameter
    from tunesmith.params import shown_seconds
    from tunesmith.request import check_request

    assert [shown_seconds(s) for s in (2.97215, 2.999, 0.512, 600.0, 11.88)] == ["2.97", "2.99", "0.51", "600", "11.88"]
    assert [shown_seconds(s, "least") for s in (2.97215, 10.0, 9.991)] == ["2.98", "10", "10"]
    with pytest.raises(InvalidParameter, match=r"^duration \(-d\) 3 s is longer than the 2.97 s this model makes at "
                                               r"once$"):
        check_request("pads", family="stable_audio", duration=3, longest=2.97215)


@pytest.mark.slow
def test_progress_in_a_log_is_a_line_per_tenth(mono_ckpt, tmp_path):
    """stderr a pipe (a log): no bar redrawn with carriage returns, a line each tenth done."""
    proc = run("generate", "jazz", "-m", mono_ckpt[0], "-d", "1", "--seed", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("generating: ")]
    percents = [int(line.split()[1].rstrip("%")) for line in lines]
    assert percents == sorted(set(percents)) and percents[-1] == 100 and len(percents) <= 11, lines
    done, total = lines[-1].split("(")[1].split()[0].split("/")
    assert done == total and int(total) >= 50, lines  # 1 s: 50 frames of 20 ms, and the delay pattern's tail


def test_log_lines_count_tenths_and_start_again_on_a_retry():
    import io

    from tunesmith.generation import LogLines

    out = io.StringIO()
    report = LogLines("separating", "segment", out)
    for done in (0, 1, 2, 3, 5, 6, 7, 1, 7):  # a retry from the start after 7
        report(done, 7)
    assert out.getvalue().splitlines() == [
        "separating: 0% (0/7 segments)", "separating: 10% (1/7 segments)", "separating: 20% (2/7 segments)",
        "separating: 40% (3/7 segments)", "separating: 70% (5/7 segments)", "separating: 80% (6/7 segments)",
        "separating: 100% (7/7 segments)", "separating: 10% (1/7 segments)", "separating: 100% (7/7 segments)"]
