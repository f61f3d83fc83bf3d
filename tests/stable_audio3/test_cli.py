"""The tunesmith command with Stable Audio 3: generate, repaint (--init-audio, --repaint repeated) and extend
(--continue, -d the total) on a tiny folder, the files probed; bad input one line before any model loads."""

import numpy as np
import pytest
import soundfile as sf

from ..test_cli import one_error_line, run
from .tiny import SAMPLE_RATE


@pytest.fixture
def source(tmp_path):
    """A 2 s stereo sound at the tiny model's rate."""
    path = tmp_path / "source.wav"
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    sf.write(str(path), np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.3 * np.sin(2 * np.pi * 330 * t)], 1),
             SAMPLE_RATE)
    return path


def probe(path):
    info = sf.info(str(path))
    return info.samplerate, info.channels, info.frames


@pytest.mark.slow
def test_generate_repaint_and_continue(sa3_ckpt, source, tmp_path):
    folder = sa3_ckpt[0]
    made = tmp_path / "made.wav"
    proc = run("generate", "calm piano", "-m", folder, "-d", "0.5", "--steps", "2", "--seed", "3", "-o", made,
               "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(made) and probe(made) == (SAMPLE_RATE, 2, SAMPLE_RATE // 2)
    assert "seed 3" in proc.stderr

    repainted = tmp_path / "repainted.wav"  # two spans; the clip lasts as long as its source
    proc = run("generate", "warm pad", "-m", folder, "--init-audio", source, "--repaint", "0.5:1",
               "--repaint", "1.5:", "--seed", "4", "-o", repainted, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert probe(repainted) == (SAMPLE_RATE, 2, 2 * SAMPLE_RATE)

    moved = tmp_path / "moved.wav"  # audio-to-audio
    proc = run("generate", "bright synth", "-m", folder, "--init-audio", source, "--strength", "0.5", "-d", "1",
               "--seed", "5", "-o", moved, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert probe(moved) == (SAMPLE_RATE, 2, SAMPLE_RATE)

    extended = tmp_path / "extended.wav"  # -d is the total: 2 s kept, 1 s added
    proc = run("generate", "calm piano", "-m", folder, "--continue", source, "-d", "3", "--seed", "6",
               "-o", extended, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert probe(extended) == (SAMPLE_RATE, 2, 3 * SAMPLE_RATE)
    # the same seed and values give the same file
    again = tmp_path / "again.wav"
    assert run("generate", "calm piano", "-m", folder, "--continue", source, "-d", "3", "--seed", "6",
               "-o", again, "--quiet").returncode == 0
    assert (sf.read(str(again))[0] == sf.read(str(extended))[0]).all()

    looped = tmp_path / "looped.wav"  # a loop lasts exactly its duration
    proc = run("generate", "warm pad", "-m", folder, "-d", "0.75", "--loop", "--steps", "2", "--seed", "7",
               "-o", looped, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert probe(looped) == (SAMPLE_RATE, 2, 3 * SAMPLE_RATE // 4)


@pytest.mark.parametrize("args, words", [
    (["--init-audio", "source.wav", "--repaint", "1:0.5"], "repaint (--repaint) span 1:0.5 s ends before it starts"),
    (["--init-audio", "source.wav", "--repaint", "1:3"], "repaint (--repaint) span 1:3 s is not inside the 2 s clip"),
    (["--init-audio", "source.wav", "--repaint", "0.5:1", "--repaint", "3:"], "span 3:2 s is not inside"),
    (["--init-audio", "source.wav", "--repaint", "abc"], "'abc' is not START:END in seconds"),
    (["--repaint", "0:1"], "repaint (--repaint) needs the audio to repaint: give it as audio_prompt (--init-audio)"),
    (["--init-audio", "source.wav", "--repaint", "0:1", "--strength", "0.5"], "strength (--strength) is for "
                                                                              "audio-to-audio"),
    (["--continue", "source.wav"], "continuation (--continue) needs the total length to extend it to: give it as "
                                   "duration (-d)"),
    (["--continue", "source.wav", "-d", "2"], "continuation (--continue) lasts 2.00 s: the duration (-d) of 2 s "
                                              "leaves nothing to add"),
    (["--continue", "source.wav", "-d", "4", "--init-audio", "source.wav"],
     "does not go with audio_prompt (--init-audio)"),
    (["--continue", "source.wav", "-d", "4", "--repaint", "0:1"], "does not go with repaint (--repaint)"),
    (["--continue", "missing.wav", "-d", "4"], "missing.wav"),
    (["-d", "121"], "duration (-d) 121 s is longer than the 120 s this model makes at once"),
    (["--continue", "source.wav", "-d", "121"], "duration (-d) 121 s is longer than the 120 s this model makes"),
    (["-m", "sa3-medium", "-d", "381"], "duration (-d) 381 s is longer than the 380 s this model makes at once"),
    (["-m", "sa3-medium", "--continue", "source.wav", "-d", "400"], "duration (-d) 400 s is longer than the 380 s"),
    (["-m", "sa3-medium", "--init-audio", "source.wav", "--repaint", "1:3"], "span 1:3 s is not inside the 2 s clip"),
    (["--sampler", "euler"], "sampler (--sampler) is not an option of Stable Audio 3 models"),
    (["--lyrics-text", "la"], "lyrics (--lyrics) is not an option of Stable Audio 3 models"),
    (["--quantize", "int4"], "--quantize int4 applies to MusicGen models (Stable Audio, ACE-Step and Stable Audio 3: "
                             "int8, on the CPU)"),
    (["--quantize", "int8", "--device", "cuda"], "--quantize int8 is for the CPU with Stable Audio 3 models"),
])
def test_bad_input_is_one_line_before_loading(source, tmp_path, args, words):
    """sa3-small (or the sa3-medium given after it) is not in the (empty, offline) cache: a refusal that names
    the value came before any load."""
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    line = one_error_line(run("generate", "calm piano", "-m", "sa3-small", *args, cwd=tmp_path, env=env))
    assert words in line, line
    assert not list(tmp_path.glob("calm*"))


def test_other_families_refuse_stable_audio_3_flags(mono_ckpt, source, tmp_path):
    assert "--repaint is given once for ACE-Step" not in one_error_line(
        run("generate", "jazz", "-m", mono_ckpt[0], "--repaint", "0:1", cwd=tmp_path))
    line = one_error_line(run("generate", "jazz", "-m", mono_ckpt[0], "-d", "1", "--init-audio", source, cwd=tmp_path))
    assert "MusicGen continues audio with --continue FILE" in line


def test_models_lists_the_sa3_aliases_in_their_columns():
    lines = run("models").stdout.splitlines()
    rows = {line.split()[0]: line for line in lines[1:]}
    column = lines[0].index("hub id")
    for alias in ("sa3-small", "sa3-medium-base"):
        row = rows[alias]
        assert row[column:].startswith("stabilityai/stable-audio-3-"), row
        assert row[:column].rstrip().endswith("Stable Audio 3")  # a gap after the family's 14 characters


def test_download_fetches_the_t5gemma_a_stability_folder_lacks(monkeypatch, tmp_path, capsys):
    """`tunesmith download sa3-*` asks Stable Audio 3's also_needed (not Stable Audio Open's)."""
    import json

    from tunesmith import hub
    from tunesmith.cli import main

    folder = tmp_path / "sa3-small"
    folder.mkdir()
    (folder / "model_config.json").write_text(json.dumps({"model_type": "diffusion_cond", "model": {"conditioning": {
        "configs": [{"id": "prompt", "type": "t5gemma", "config": {}}]}}}))
    fetched = []

    def download(repo):
        fetched.append(repo)
        return folder

    monkeypatch.setattr(hub, "download", download)
    assert main(["download", "sa3-small"]) == 0
    assert fetched == ["stabilityai/stable-audio-3-small-music", "google/t5gemma-b-b-ul2"]
    assert capsys.readouterr().out.strip() == str(folder)
