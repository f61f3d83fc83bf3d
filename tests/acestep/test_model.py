"""ACE-Step 1.5 through tunesmith's AceStep, against diffusers' AceStepPipeline itself."""

import logging
import shutil

import numpy as np
import pytest
import torch

import tunesmith
from tunesmith.acestep.decode import decode, normalize, reach
from tunesmith.acestep.prompt import caption_text, lyrics_text
from tunesmith.acestep.sample import timestep_schedule
from tunesmith.errors import CheckpointError, InvalidParameter, TunesmithError
from tunesmith.models import describe, family_of
from tunesmith.request import check_request, read_lyrics

LYRICS = "[verse]\nSoft notes in the morning light\n[chorus]\nMusic fills the air tonight"


def reference(pipe, prompt, seed, lyrics="", seconds=10.0, steps=3, cfg=7.0, language="en"):
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipe(prompt, lyrics=lyrics, audio_duration=seconds, num_inference_steps=steps, guidance_scale=cfg,
                vocal_language=language, generator=generator).audios[0].numpy()


@pytest.mark.parametrize("lyrics, seconds", [("", 10.0), (LYRICS, 12.34)])
def test_same_seed_same_audio_as_diffusers(ace_ckpt, ace_model, lyrics, seconds):
    clip, = ace_model.generate("upbeat indie pop, jangly guitars", lyrics=lyrics, duration=seconds, seed=7, steps=3)
    expected = reference(ace_ckpt[1], "upbeat indie pop, jangly guitars", 7, lyrics, seconds)
    assert clip.audio.shape == (2, round(seconds * 48000)) and clip.sample_rate == 48000
    np.testing.assert_allclose(clip.audio, expected[:, :clip.audio.shape[1]], atol=1e-5, rtol=0)
    assert clip.params["steps"] == 3 and clip.params["cfg"] == 1.0 and clip.params["lyrics"] == lyrics.strip()


def test_guided_base_model_matches_diffusers(ace_base_ckpt):
    model = tunesmith.load(ace_base_ckpt[0], device="cpu", dtype="float32")
    clip, = model.generate("synthwave ballad", lyrics=LYRICS, language="es", duration=10, seed=2, steps=3, cfg=3.0)
    expected = reference(ace_base_ckpt[1], "synthwave ballad", 2, LYRICS, 10.0, cfg=3.0, language="es")
    np.testing.assert_allclose(clip.audio, expected, atol=1e-5, rtol=0)
    assert model.config.steps == 50 and model.config.cfg == 7.0 and clip.params["cfg"] == 3.0


def test_texts_and_schedule_are_the_pipelines(ace_ckpt):
    pipe = ace_ckpt[1]
    assert (caption_text("lofi", 95.7), lyrics_text(LYRICS, "ja")) == pipe._format_prompt(
        "lofi", LYRICS, vocal_language="ja", audio_duration=95.7)
    for steps in (1, 3, 8, 50):
        assert timestep_schedule(steps) == pipe._get_timestep_schedule(steps, 3.0, dtype=torch.float32).tolist()


def test_rows_lyrics_and_seeds(ace_model):
    """Each row is its own seed in any batch; the same seed reproduces; lyrics change the song."""
    calls = []
    rows = ace_model.generate(["dream pop", "garage rock"], lyrics=LYRICS, duration=10, seed=1, steps=2,
                              num_variations=2, progress=lambda done, total: calls.append((done, total)))
    assert [(c.prompt, c.seed) for c in rows] == [("dream pop", 1), ("dream pop", 2), ("garage rock", 1),
                                                   ("garage rock", 2)]
    assert {t for _, t in calls} == {2 * 2 + 4 * 1} and calls[-1] == (8, 8)  # 2 steps per prompt, 1 VAE window a song
    alone, = ace_model.generate("garage rock", lyrics=LYRICS, duration=10, seed=2, steps=2)
    np.testing.assert_allclose(alone.audio, rows[3].audio, atol=1e-5, rtol=0)  # batched products round apart
    other, = ace_model.generate("garage rock", lyrics="[verse]\nNothing here but rain", duration=10, seed=2, steps=2)
    assert np.abs(other.audio - alone.audio).max() > 1e-3
    assert np.abs(rows[0].audio - rows[1].audio).max() > 1e-3


def test_windowed_decode_is_the_whole_decode(ace_model):
    vae = ace_model._parts.vae
    latents = torch.randn(1, 40, vae.decoder.conv1.in_channels, generator=torch.Generator().manual_seed(0))
    ticks = []
    with torch.inference_mode():
        whole = vae.decoder(latents.transpose(1, 2)).float()
        windowed = decode(vae, latents, window=16, report=lambda: ticks.append(1))
    assert reach(vae.decoder) >= 2 and len(ticks) == 3 and windowed.shape == whole.shape
    np.testing.assert_allclose(windowed.numpy(), whole.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("broken, problem", [
    (lambda n: torch.randn(1, 2, n, generator=torch.Generator().manual_seed(0)), "static"),
    (lambda n: torch.full((1, 2, n), 0.02), "DC offset"),
    (lambda n: torch.full((1, 2, n), float("nan")), "NaN"),
    (lambda n: torch.zeros(1, 2, n), "silent"),
])
def test_the_output_check_flags_what_a_broken_decoder_makes(broken, problem):
    audio = normalize(broken(48000 * 10))[0].numpy()  # the pipeline's peak normalisation comes first
    check = tunesmith.check_audio(audio)
    assert not check.ok and problem in check.summary()


@pytest.mark.parametrize("kwargs, words", [
    (dict(duration=5), "shorter than the 10 s that ACE-Step models make at least"),
    (dict(duration=601), "longer than the 600 s"),
    (dict(duration=599, loop=True), "a loop of 599 s"),
    (dict(cfg=3), "cfg (--cfg) does not apply to turbo"),
    (dict(steps=0), "steps (--steps)"),
    (dict(language="english please"), "language (--language) must be a language code"),
    (dict(lyrics=["la", "la"]), "lyrics (--lyrics) must be a text"),
])
def test_bad_values_are_one_clear_error(ace_model, kwargs, words):
    with pytest.raises(InvalidParameter) as err:
        ace_model.generate("pop", **{"duration": 10, **kwargs})
    assert words in str(err.value) and "\n" not in str(err.value)


def test_cfg_on_turbo_is_refused_before_loading_and_again_after(ace_model):
    with pytest.raises(InvalidParameter, match=r"cfg \(--cfg\) does not apply to turbo"):
        check_request("pop", family="acestep", duration=10, cfg=3, turbo=True)
    request = check_request("pop", family="acestep", duration=10, cfg=3)  # a folder not known turbo before loading
    with pytest.raises(InvalidParameter, match=r"cfg \(--cfg\) does not apply to turbo"):
        ace_model.generate_request(request)


def test_audio_inputs_schedules_and_other_families_options_are_refused():
    with pytest.raises(InvalidParameter, match=r"is a song to repaint .* add repaint \(--repaint\)"):
        check_request("pop", family="acestep", duration=10, audio_prompt=(np.ones((2, 4800), np.float32), 48000))
    with pytest.raises(InvalidParameter, match="one text per song"):
        check_request([(0, "pop"), (5, "rock")], family="acestep", duration=10)
    with pytest.raises(InvalidParameter, match=r"temperature \(--temperature\) is not an option of ACE-Step"):
        check_request("pop", family="acestep", duration=10, temperature=0.5)
    with pytest.raises(InvalidParameter, match=r"lyrics \(--lyrics\) is not an option of MusicGen"):
        check_request("pop", duration=10, lyrics="la la")


def test_lyrics_longer_than_the_song_can_sing_are_warned(caplog):
    with caplog.at_level(logging.WARNING, logger="tunesmith"):
        check_request("pop", family="acestep", duration=10, lyrics="[verse]\n" + "la " * 40)
        assert not caplog.records
        check_request("pop", family="acestep", duration=10, lyrics="[verse]\n" + "word " * 200)
    assert "200 words of lyrics for 10 s" in caplog.text


def test_lyrics_files_missing_or_not_text(tmp_path):
    good = tmp_path / "song.txt"
    good.write_text("[verse]\nhello\n", encoding="utf-8")
    assert read_lyrics(good) == "[verse]\nhello\n"
    binary = tmp_path / "song.mp3"
    binary.write_bytes(bytes(range(256)) * 4)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    for path, words in ((tmp_path / "nope.txt", "does not exist"), (binary, "is not text"), (empty, "is empty"),
                        (tmp_path, "is a folder")):
        with pytest.raises(TunesmithError, match=words):
            read_lyrics(path)


def test_load_and_describe_pick_the_family_from_the_files(ace_ckpt, ace_model, tmp_path):
    assert family_of(ace_ckpt[0]) == "acestep" and isinstance(ace_model, tunesmith.AceStep)
    spec = describe(ace_ckpt[0])
    assert (spec.family, spec.longest) == ("acestep", 600.0)
    alias = describe("acestep")  # no download: the alias says it
    assert (alias.family, alias.longest, alias.folder, alias.turbo) == ("acestep", 600.0, None, True)
    assert not describe("acestep-sft").turbo and spec.turbo
    with pytest.raises(InvalidParameter, match=r"compile is not a loading option of ACE-Step models \(theirs: "
                                                r"quantize, threads, lora, swap_lora\)"):
        tunesmith.load(ace_ckpt[0], device="cpu", compile=True)


def test_a_folder_missing_or_breaking_a_part_is_one_line(ace_ckpt, tmp_path):
    broken = tmp_path / "ace"
    shutil.copytree(ace_ckpt[0], broken)
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"oops")
    with pytest.raises(CheckpointError) as err:
        tunesmith.load(broken, device="cpu")
    assert "the transformer in" in str(err.value) and "\n" not in str(err.value)
    shutil.rmtree(broken / "condition_encoder")
    with pytest.raises(CheckpointError, match="lacks the condition_encoder folder"):
        describe(broken)


def test_a_loop_lasts_its_duration(ace_model):
    clip, = ace_model.generate("tech house groove", duration=10, seed=5, steps=1, loop=True)
    assert clip.audio.shape == (2, 480000) and clip.params["loop"]
