"""ACE-Step's repaint (audio_prompt + repaint) against AceStepPipeline(task_type="repaint"), and its refusals."""

import numpy as np
import pytest
import soundfile as sf
import torch

from tunesmith.acestep.repaint import encode, reach, span_frames
from tunesmith.audio.prompt import fit_audio
from tunesmith.errors import InvalidParameter, TunesmithError
from tunesmith.request import check_request

from ..test_cli import one_error_line, run
from .test_model import LYRICS


def song(seconds: float, rate: int = 48000, channels: int = 2, seed: int = 0) -> np.ndarray:
    """A source that is not silent and not the same everywhere: chords over noise, (channels, samples)."""
    t = np.arange(round(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.3 * t))
    noise = np.random.default_rng(seed).standard_normal((channels, t.size))
    return (0.1 * tone + 0.05 * noise).astype(np.float32)


def pipeline_repaint(pipe, prompt, source48: np.ndarray, start, end, seed, lyrics="", steps=2):
    """The pipeline's repaint; its VAE draws the source's latents from torch's global generator."""
    torch.manual_seed(seed)
    return pipe(prompt, lyrics=lyrics, task_type="repaint", src_audio=torch.from_numpy(source48),
                repainting_start=start, repainting_end=-1 if end is None else end, audio_duration=None,
                num_inference_steps=steps, guidance_scale=1.0,
                generator=torch.Generator("cpu").manual_seed(seed)).audios[0].numpy()


@pytest.fixture(scope="module")
def repainted(ace_model):
    """Seeds 5 and 6 of one repaint of a 10 s song, in one call."""
    source = song(10.0)
    return source, ace_model.generate("dream pop", lyrics=LYRICS, audio_prompt=(source, 48000), repaint=(2.0, 6.0),
                                      seed=5, steps=2, num_variations=2)


def test_a_repaint_is_the_pipelines(ace_ckpt, repainted):
    source, (clip, _) = repainted
    expected = pipeline_repaint(ace_ckpt[1], "dream pop", source, 2.0, 6.0, 5, LYRICS)
    assert clip.audio.shape == expected.shape == (2, 480000)
    np.testing.assert_allclose(clip.audio, expected, atol=1e-5, rtol=0)
    assert clip.params["repaint"] == [2.0, 6.0] and clip.params["duration"] == 10.0


def test_a_source_at_another_rate_and_length_is_resampled_and_padded_to_whole_frames(ace_ckpt, ace_model):
    """11.3 s of mono at 44.1 kHz: the pipeline is given the same source at 48 kHz stereo, padded with silence
    to whole latent frames (1920 samples); tunesmith's song is cut back to the source's length."""
    source = song(11.3, rate=44100, channels=1)
    clip, = ace_model.generate("garage rock", audio_prompt=(source, 44100), repaint=(7.5, None), seed=2, steps=2)
    n = round(11.3 * 48000)
    source48 = fit_audio(source, 44100, 48000, 2)[:, :n]
    source48 = np.pad(source48, ((0, 0), (0, -(-n // 1920) * 1920 - source48.shape[1])))
    expected = pipeline_repaint(ace_ckpt[1], "garage rock", source48, 7.5, None, 2)
    assert clip.audio.shape == (2, n) and expected.shape == source48.shape
    np.testing.assert_allclose(clip.audio, expected[:, :n], atol=1e-5, rtol=0)


def test_the_source_matters_and_seeds_differ(ace_model, repainted):
    _, (five, six) = repainted
    plain, = ace_model.generate("dream pop", lyrics=LYRICS, duration=10, seed=5, steps=2)
    outside = np.r_[0:2 * 48000, 6 * 48000:10 * 48000]
    assert np.abs(five.audio[:, outside] - plain.audio[:, outside]).max() > 1e-2
    assert np.abs(five.audio - six.audio).max() > 1e-3 and six.seed == 6


def test_windowed_encode_is_the_whole_encode(ace_model):
    vae = ace_model._parts.vae
    audio = torch.from_numpy(song(1.6))[None]  # 40 latent frames
    ticks = []
    with torch.inference_mode():
        whole = vae.encoder(audio)
        windowed = encode(vae, audio, window=16, report=lambda: ticks.append(1))
    assert reach(vae) >= 2 and len(ticks) == 3 and windowed.shape == whole.shape == (1, 16, 40)
    np.testing.assert_allclose(windowed.numpy(), whole.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("start, end", [(2.0, 6.0), (0.0, None), (0.01, 0.02), (3.999, 10.0), (9.99, None),
                                        (0.28, 7.3)])
def test_the_span_is_the_pipelines_mask(ace_ckpt, start, end):
    mask = ace_ckpt[1]._build_chunk_mask("repaint", 250, 1, "cpu", torch.float32, 1, start, end, True)[0, :, 0]
    a, b = span_frames(250, start, end, 25.0)
    assert torch.nonzero(mask).flatten().tolist() == list(range(a, b))


TEN_SECONDS = (song(10.0), 48000)


@pytest.mark.parametrize("kwargs, words", [
    (dict(repaint=(2, 4)), "repaint (--repaint) needs the song to repaint: give it as audio_prompt (--init-audio"),
    (dict(audio_prompt=TEN_SECONDS), "audio_prompt (--init-audio) is a song to repaint for ACE-Step models: add "
                                     "repaint (--repaint)"),
    (dict(audio_prompt=TEN_SECONDS, repaint=(6, 4)), "repaint (--repaint) ends at 4 s, not after its start (6 s)"),
    (dict(audio_prompt=TEN_SECONDS, repaint=(-1, 4)), "its start a number >= 0"),
    (dict(audio_prompt=TEN_SECONDS, repaint=(11, None)), "starts at 11 s, not inside the song (10.00 s)"),
    (dict(audio_prompt=TEN_SECONDS, repaint=(2, 12)), "ends at 12 s, after the song's end (10.00 s)"),
    (dict(audio_prompt=TEN_SECONDS, repaint="2:4"), "repaint (--repaint) must be a start and an end in seconds (no "
                                                    "end: to the end of the song), got '2:4'"),
    (dict(audio_prompt=TEN_SECONDS, repaint=(2, 4), duration=30), "duration (-d) 30 s: a repaint keeps the length"),
    (dict(audio_prompt=TEN_SECONDS, repaint=(2, 4), loop=True), "a loop cannot repaint a song"),
    (dict(audio_prompt=(song(5.0), 48000), repaint=(2, 4)), "the song to repaint lasts 5.00 s: ACE-Step repaints "
                                                            "songs of 10 to 600 s"),
    (dict(audio_prompt=(song(601.0, rate=1000, channels=1), 1000), repaint=(2, 4)), "lasts 601.00 s"),
])
def test_bad_repaints_are_one_line(kwargs, words):
    with pytest.raises(InvalidParameter) as err:
        check_request("pop", family="acestep", longest=600.0, **{"duration": None, **kwargs})
    assert words in str(err.value) and "\n" not in str(err.value) and "None" not in str(err.value)


def test_a_repaint_takes_its_length_from_the_song(tmp_path):
    path = tmp_path / "song.flac"
    sf.write(str(path), song(12.5, rate=44100).T, 44100)
    request = check_request("pop", family="acestep", longest=600.0, duration=None, audio_prompt=path, repaint=[3, None])
    assert request.duration == 12.5 and request.song.repaint == (3.0, None) and request.audio_prompt[1] == 44100
    again = check_request("pop", family="acestep", longest=600.0, duration=request.duration, audio_prompt=path,
                          repaint=[3, -1], seed=request.seed)  # as the server checks a stored job again
    assert again.song == request.song and again.duration == request.duration
    notes = tmp_path / "notes.wav"
    notes.write_text("not audio at all")
    with pytest.raises(TunesmithError, match="notes.wav") as err:
        check_request("pop", family="acestep", duration=None, audio_prompt=notes, repaint=(1, 2))
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_the_cli_repaints_a_song_to_its_length(ace_ckpt, tmp_path):
    source = tmp_path / "song.wav"
    sf.write(str(source), song(10.5, rate=44100, channels=1)[0], 44100)
    out = tmp_path / "fixed.wav"
    proc = run("generate", "indie pop, female vocals", "-m", ace_ckpt[0], "--init-audio", source, "--repaint", "3:",
               "--steps", "1", "--seed", "3", "-o", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.frames) == (48000, 2, 504000)


@pytest.mark.parametrize("args, words", [
    (["--repaint", "3:5"], "repaint (--repaint) needs the song to repaint"),
    (["--init-audio", "song.wav", "--repaint", "8:4"], "repaint (--repaint) ends at 4 s, not after its start (8 s)"),
    (["--init-audio", "song.wav", "--repaint", "3:50"], "ends at 50 s, after the song's end"),
    (["--init-audio", "song.wav", "--repaint", "3:5", "-d", "30"], "a repaint keeps the length"),
    (["--init-audio", "notes.wav", "--repaint", "3:5"], "notes.wav"),
    (["--init-audio", "song.wav", "--repaint", "3-5"], "'3-5' is not START:END in seconds"),
])
def test_bad_repaints_on_the_command_line_are_one_line(ace_ckpt, tmp_path, args, words):
    sf.write(str(tmp_path / "song.wav"), song(10.0).T, 48000)
    (tmp_path / "notes.wav").write_text("not audio at all")
    assert words in one_error_line(run("generate", "pop", "-m", ace_ckpt[0], *args, cwd=tmp_path))
    assert sorted(p.name for p in tmp_path.glob("*.wav")) == ["notes.wav", "song.wav"]
