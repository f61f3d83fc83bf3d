"""The tunesmith command with Stable Audio checkpoints: the same commands, the family's own options."""

import numpy as np
import pytest
import soundfile as sf

from ..test_cli import one_error_line, run
from ..video.test_score import audio_of, make_video


@pytest.mark.slow
def test_generate_a_stable_audio_clip_and_a_loop(sao_ckpt, tmp_path):
    out = tmp_path / "rain.wav"
    proc = run("generate", "rain on a tin roof", "-m", sao_ckpt[0], "-d", "0.3", "--steps", "4", "--seed", "3",
               "--negative", "music", "-o", out)
    assert proc.returncode == 0, proc.stderr
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.frames) == (4000, 2, 1200)
    loop = tmp_path / "loop.flac"
    proc = run("generate", "tech house drum loop", "-m", sao_ckpt[0], "-d", "0.25", "--steps", "2", "--loop",
               "--quiet", "-o", loop)
    assert proc.returncode == 0, proc.stderr and sf.info(str(loop)).frames == 1000


def test_init_audio_and_strength(sao_ckpt, tmp_path):
    source = tmp_path / "source.wav"
    t = np.arange(2000) / 4000
    sf.write(str(source), np.stack([np.sin(2 * np.pi * 220 * t)] * 2, axis=1) * 0.3, 4000)
    out = tmp_path / "moved.wav"
    proc = run("generate", "rain", "-m", sao_ckpt[0], "-d", "0.3", "--steps", "3", "--init-audio", source,
               "--strength", "0.4", "--quiet", "-o", out)
    assert proc.returncode == 0, proc.stderr and out.exists()


@pytest.mark.parametrize("args, words", [
    (["-d", "2"], "longer than the 0.51 s this model makes at once"),
    (["--steps", "0"], "steps (--steps)"),
    (["--cfg", "-2"], "cfg (--cfg)"),
    (["--temperature", "0.5"], "temperature (--temperature) is not an option of Stable Audio"),
    (["--continue", "x.wav"], "do not continue audio"),
    (["--strength", "0.5"], "applies to an init audio"),
    (["--init-audio", "missing.wav"], "missing.wav"),
    (["--quantize", "int4"], "--quantize int4 applies to MusicGen"),
    (["--sampler", "euler"], "dpmpp-2m-sde"),
    (["--prompt", "0:rain", "--prompt", "0.1:thunder"], "one text per clip"),
])
def test_bad_values_are_one_line(sao_ckpt, tmp_path, args, words):
    if args[0] == "--prompt":
        proc = run("generate", "-m", sao_ckpt[0], "-d", "0.3", *args, cwd=tmp_path)
    else:
        proc = run("generate", "rain", "-m", sao_ckpt[0], *(["-d", "0.3"] if "-d" not in args else []), *args,
                   cwd=tmp_path)
    assert words in one_error_line(proc)
    assert not list(tmp_path.glob("*.wav"))


def test_init_audio_is_refused_for_musicgen(mono_ckpt, tmp_path):
    assert "--init-audio is for Stable Audio" in one_error_line(
        run("generate", "jazz", "-m", mono_ckpt[0], "--init-audio", "x.wav", cwd=tmp_path))
    assert "steps (--steps) is not an option of MusicGen" in one_error_line(
        run("generate", "jazz", "-m", mono_ckpt[0], "--steps", "4", cwd=tmp_path))


def test_a_gated_model_offline_says_how_to_get_it(tmp_path):
    line = one_error_line(run("generate", "rain", "-m", "sao-small", "-d", "5", cwd=tmp_path,
                              env={"HF_HUB_CACHE": str(tmp_path / "empty")}))
    assert "stabilityai/stable-audio-open-small" in line and "licence" in line and "hf auth login" in line


def test_models_lists_every_family():
    proc = run("models")
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert "Stable Audio" in rows["sao-small"] and "11.9 s" in rows["sao-small"] and "44.1 kHz stereo" in rows["sao"]
    assert "MusicGen" in rows["small"] and "long form" in rows["small"]


@pytest.mark.slow
def test_score_a_video_with_stable_audio(sao_ckpt, tmp_path):
    video = make_video(tmp_path / "clip.mp4", seconds=0.4)
    out = tmp_path / "scored.mp4"
    proc = run("score", video, "warm ambient pad, slow", "-m", sao_ckpt[0], "--steps", "3", "--seed", "2",
               "--quiet", "-o", out)
    assert proc.returncode == 0, proc.stderr
    audio, rate = audio_of(out)
    assert rate == 48000 and audio.shape[0] == 2 and abs(audio.shape[1] / rate - 0.4) < 0.05
    long_video = make_video(tmp_path / "long.mp4", seconds=1.0)
    assert "longer than the 0.51 s" in one_error_line(run("score", long_video, "pad", "-m", sao_ckpt[0]))
