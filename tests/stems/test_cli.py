"""tunesmith stems and generate --stems: files written once each, nothing overwritten, one line per
bad input."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from tunesmith.cli import main

from ..audio.long_files import claim_frames, silent_flac
from .test_load import _crafted
from .test_separate import music
from .tiny import SOURCES

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def song(tmp_path):
    path = tmp_path / "song.wav"
    sf.write(str(path), music(0.8, 48000, channels=1)[0], 48000)
    return path


def error_line(capsys, argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith("tunesmith: error: "), err
    return lines[0]


def test_stems_writes_each_file_once_and_never_overwrites(bag_folder, song, tmp_path, capsys):
    out = tmp_path / "stems"  # made by the command: its parent exists
    assert main(["stems", str(song), "-o", str(out), "-m", str(bag_folder), "--quiet"]) == 0
    printed = capsys.readouterr().out.split()
    expected = [out / f"song-{name}.wav" for name in SOURCES]
    assert printed == [str(p) for p in expected] and sorted(out.iterdir()) == sorted(expected)
    for path in expected:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.frames) == (48000, 1, 38400)  # the input's
    before = expected[0].read_bytes()
    line = error_line(capsys, ["stems", song, "-o", out, "-m", bag_folder, "--quiet"])
    assert "song-drums.wav exists" in line and "--overwrite" in line and expected[0].read_bytes() == before
    assert main(["stems", str(song), "-o", str(out), "-m", str(bag_folder), "--quiet", "--overwrite"]) == 0
    assert sorted(out.iterdir()) == sorted(expected)  # no partial files left behind


def test_two_stems_beside_the_input_in_flac(bag_folder, song, capsys):
    assert main(["stems", str(song), "-m", str(bag_folder), "--two-stems", "vocals", "--format", "flac",
                 "--shifts", "0", "--quiet"]) == 0
    folder = song.parent
    assert sorted(p.name for p in folder.iterdir()) == ["song-no_vocals.flac", "song-vocals.flac", "song.wav"]
    assert sf.info(str(folder / "song-vocals.flac")).samplerate == 48000


def test_bad_inputs_are_one_line_each_and_write_nothing(bag_folder, song, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not music")
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 2), np.float32), 44100)
    longer_than_an_hour = claim_frames(silent_flac(tmp_path / "long.flac", 2), 4000 * 16000)  # its header says
    cases = [
        (["stems", text, "-m", bag_folder], "is not an audio file that can be read"),
        (["stems", empty, "-m", bag_folder], "is empty: there is nothing to separate"),
        (["stems", tmp_path / "missing.wav", "-m", bag_folder], "does not exist"),
        (["stems", song, "-m", "htdemucs_9s"], "unknown stems model 'htdemucs_9s'"),
        (["stems", song, "-m", bag_folder, "--two-stems", "kazoo"], "--two-stems must be one of this model's"),
        (["stems", song, "-m", bag_folder, "-o", tmp_path / "a" / "b"], "does not exist, nor does its parent"),
        (["stems", song, "-m", bag_folder, "-o", text], "is a file: -o takes a folder"),
        (["stems", song, "-m", bag_folder, "--shifts", "-2"], "--shifts must be a whole number"),
        (["stems", longer_than_an_hour, "-m", bag_folder], "long.flac lasts 4000.0 s: more than the 3600 s allowed"),
    ]
    before = sorted(tmp_path.rglob("*"))
    for argv, expected in cases:
        assert expected in error_line(capsys, argv), argv
    assert sorted(tmp_path.rglob("*")) == before


def test_an_unwritable_folder_is_refused_before_separating(bag_folder, song, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    line = error_line(capsys, ["stems", song, "-m", bag_folder, "-o", locked])
    assert "permission denied" in line and list(locked.iterdir()) == []


def test_a_crafted_model_is_refused_and_runs_nothing(song, tmp_path, capsys):
    folder = tmp_path / "evil"
    folder.mkdir()
    marker = tmp_path / "ran"
    _crafted(folder / "deadbeef.safetensors", klass="os.mkdir", args=[str(marker)])
    (folder / "htdemucs.yaml").write_text("models: ['deadbeef']\n")
    line = error_line(capsys, ["stems", song, "-m", folder])
    assert "'os.mkdir'" in line and "refused" in line and not marker.exists()


def test_generate_with_stems_writes_the_clip_and_its_stems(mono_ckpt, bag_folder, tmp_path, capsys):
    out = tmp_path / "groove.wav"
    argv = ["generate", "funk groove", "-m", str(mono_ckpt[0]), "-d", "0.4", "--seed", "3", "-o", str(out),
            "--stems", "--stems-model", str(bag_folder), "--quiet"]
    assert main(argv) == 0
    written = [tmp_path / "groove.wav"] + [tmp_path / f"groove-{name}.wav" for name in SOURCES]
    assert capsys.readouterr().out.split() == [str(p) for p in written]
    assert sorted(tmp_path.iterdir()) == sorted(written)
    for path in written:
        assert (sf.info(str(path)).samplerate, sf.info(str(path)).frames) == (32000, 12800)
    written[0].unlink()  # the clip's name is free again, its stems' are not: refused before generating
    line = error_line(capsys, argv)
    assert "groove-drums.wav exists" in line and "--overwrite" in line and not written[0].exists()
    alone = [a for a in argv if a != "--stems"]
    assert "--stems-model chooses the model of --stems" in error_line(capsys, alone)


def test_names_load_from_the_hub_cache_offline_and_say_how_to_download(bag_folder, song, tmp_path):
    """As users run it: htdemucs from the Hugging Face cache without network; not cached, one line that
    says which model and the command that fetches it."""
    cache = tmp_path / "hub"
    root = cache / "models--adefossez--HTDemucs"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    shutil.copytree(bag_folder, root / "snapshots" / COMMIT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "OMP_NUM_THREADS": "1"}

    def run(*args):
        proc = subprocess.run([sys.executable, "-m", "tunesmith", *map(str, args)], env=env, capture_output=True,
                              text=True, timeout=300)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    proc = run("stems", song, "-o", tmp_path / "out", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "out").glob("song-*.wav"))) == 4
    proc = run("stems", song, "-m", "htdemucs_6s", "-o", tmp_path / "six")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "model adefossez/HTDemucs-6s is not in the local" in lines[0]
    assert "run 'tunesmith download htdemucs_6s'" in lines[0] and not (tmp_path / "six").exists()
