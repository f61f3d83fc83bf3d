"""The tunesmith command with ACE-Step pipelines: lyrics from a file, the family's own flags, one-line errors."""

import pytest
import soundfile as sf

from ..test_cli import one_error_line, run


@pytest.mark.slow
def test_generate_a_song_with_lyrics_from_a_file(ace_ckpt, tmp_path):
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text("[verse]\nSoft notes in the morning light\n[chorus]\nMusic fills the air tonight\n")
    out = tmp_path / "song.wav"
    proc = run("generate", "upbeat indie pop, female vocals", "-m", ace_ckpt[0], "--lyrics", lyrics, "-d", "12.5",
               "--steps", "2", "--seed", "3", "--language", "en", "-o", out)
    assert proc.returncode == 0, proc.stderr
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.frames) == (48000, 2, 600000)
    assert "generating" in proc.stderr and "seed 3" in proc.stderr


@pytest.mark.parametrize("args, words", [
    (["--lyrics", "missing.txt"], "lyrics file missing.txt does not exist"),
    (["--lyrics", "noise.bin"], "lyrics file noise.bin is not text"),
    (["-d", "5"], "shorter than the 10 s that ACE-Step models make at least"),
    (["--cfg", "3"], "cfg (--cfg) does not apply to turbo"),
    (["--init-audio", "x.wav"], "is a song to repaint for ACE-Step models: add repaint (--repaint) START:END"),
    (["--continue", "x.wav"], "ACE-Step models do not continue audio"),
    (["--quantize", "int4"], "--quantize int4 applies to MusicGen models (Stable Audio, ACE-Step and Stable Audio 3: "
                             "int8"),
    (["--quantize", "int8", "--device", "cuda"], "--quantize int8 is for the CPU with ACE-Step models"),
])
def test_bad_values_are_one_line(ace_ckpt, tmp_path, args, words):
    (tmp_path / "noise.bin").write_bytes(bytes(range(256)))
    proc = run("generate", "pop", "-m", ace_ckpt[0], *(["-d", "10"] if "-d" not in args else []), *args, cwd=tmp_path)
    assert words in one_error_line(proc)
    assert not list(tmp_path.glob("*.wav"))


def test_lyrics_are_refused_for_other_families(mono_ckpt, tmp_path):
    assert "lyrics (--lyrics) is not an option of MusicGen" in one_error_line(
        run("generate", "jazz", "-m", mono_ckpt[0], "--lyrics-text", "la la", cwd=tmp_path))


def test_models_lists_the_acestep_aliases():
    rows = {line.split()[0]: line for line in run("models").stdout.splitlines()[1:]}
    assert "ACE-Step/acestep-v15-xl-turbo-diffusers" in rows["acestep"] and "text + lyrics" in rows["acestep"]
    assert "600.0 s" in rows["acestep-sft"] and "48 kHz stereo" in rows["acestep-base"]


def test_cfg_for_a_turbo_alias_fails_before_any_download(tmp_path):
    """No checkpoint exists (an empty cache, the hub offline): the alias alone says the model is turbo."""
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    for alias in ("acestep", "acestep-2b"):
        line = one_error_line(run("generate", "pop", "-m", alias, "-d", "10", "--cfg", "3", cwd=tmp_path, env=env))
        assert "cfg (--cfg) does not apply to turbo ACE-Step models" in line
    line = one_error_line(run("generate", "pop", "-m", "acestep-sft", "-d", "10", "--cfg", "3", cwd=tmp_path, env=env))
    assert "not in the local Hugging Face cache" in line  # guided: the value passes, the load is what fails


@pytest.mark.parametrize("change, words", [
    ({"encoder_hidden_size": 18}, "the VAE in {vae} is malformed: its encoder makes 9 latent channels "
                                  "(encoder_hidden_size 18), its decoder takes 8 (decoder_input_channels)"),
    ({"encoder_hidden_size": 20, "decoder_input_channels": 10},
     "the transformer and the VAE in {folder} disagree: the transformer makes 8 latent channels, the VAE's "
     "decoder takes 10"),
])
def test_a_vae_whose_parts_disagree_is_refused_naming_it(ace_ckpt, tmp_path, change, words):
    """Refused from the configs, before any weights (not at --repaint with a tensor-size error)."""
    import json
    import shutil

    import tunesmith
    from tunesmith.errors import CheckpointError

    folder = tmp_path / "bad"
    shutil.copytree(ace_ckpt[0], folder)
    config = folder / "vae" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **change}))
    expected = words.format(vae=folder / "vae", folder=folder)
    assert expected in one_error_line(run("generate", "pop", "-m", folder, "-d", "10", cwd=tmp_path))
    with pytest.raises(CheckpointError) as err:
        tunesmith.load(folder, device="cpu")
    assert expected in str(err.value)
