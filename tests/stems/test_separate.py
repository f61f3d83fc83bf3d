"""tunesmith.separate against demucs' apply_model on the same model and input, and the input's rate,
length and channels kept."""

import random

import numpy as np
import pytest
import torch

from tunesmith import Clip, separate
from tunesmith.audio.io import resample
from tunesmith.errors import InvalidParameter, TunesmithError

from .tiny import SOURCES, save_bag


def music(seconds: float, rate: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """Chords with a little noise: (channels, samples) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tones = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (110, 220, 330, 523))
    audio = 0.1 * tones[None] + 0.02 * rng.standard_normal((channels, t.size))
    return audio.astype(np.float32)


def demucs_reference(bag_folder, mix: np.ndarray, shifts: int, seed: int) -> np.ndarray:
    """demucs' own path at the model's rate: its loader, BagOfModels, apply_model on the mix normalised
    as demucs.api does. -> (sources, channels, samples)."""
    import yaml
    from demucs.apply import BagOfModels, apply_model
    from demucs.hf import load_safetensors_model

    bag = yaml.safe_load(next(bag_folder.glob("*.yaml")).read_text())
    models = [load_safetensors_model(bag_folder / f"{sig}.safetensors") for sig in bag["models"]]
    model = BagOfModels(models, bag.get("weights"), bag.get("segment"))
    wav = torch.from_numpy(mix)
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    random.seed(seed)
    with torch.no_grad():
        out = apply_model(model, ((wav - mean) / std)[None], shifts=shifts, split=True, overlap=0.25)
    return (out[0] * std + mean).numpy()


@pytest.fixture(scope="module")
def bag_of_two(tmp_path_factory):
    # Like htdemucs_ft's one-hot rows: each model owns some stems.
    weights = [[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]]
    return save_bag(tmp_path_factory.mktemp("ft"), name="htdemucs_ft", models=2, weights=weights)


@pytest.mark.parametrize("bag, shifts", [("single", 1), ("single", 0), ("two", 2)])
def test_stems_match_apply_model_at_the_models_rate(bag_folder, bag_of_two, bag, shifts):
    """1.6 s at 44.1 kHz: five overlapping 0.5 s segments per pass, shifted passes, a bag's weights."""
    folder = bag_folder if bag == "single" else bag_of_two
    mix = music(1.6, 44100)
    stems = separate((mix, 44100), model=folder, device="cpu", shifts=shifts, seed=7)
    reference = demucs_reference(folder, mix, shifts, seed=7)
    assert list(stems) == SOURCES
    for name, ref in zip(SOURCES, reference):
        assert stems[name].audio.shape == mix.shape and stems[name].sample_rate == 44100
        np.testing.assert_allclose(stems[name].audio, ref, atol=1e-4, rtol=0, equal_nan=False)
    assert np.abs(reference).max() > 1e-2  # the random model does make something


def test_a_48k_mono_file_comes_back_48k_mono(stem_model, tmp_path):
    import soundfile as sf

    mix = music(1.05, 48000, channels=1)
    path = tmp_path / "mono48.wav"
    sf.write(str(path), mix[0], 48000, subtype="FLOAT")
    stems = separate(path, model=stem_model, shifts=0)
    widened = np.repeat(resample(mix, 48000, 44100), 2, axis=0)
    for name, stem in stems.items():
        assert stem.audio.shape == (1, mix.shape[1]) and stem.sample_rate == 48000 and stem.audio.dtype == np.float32
        assert stem.params["source"] == str(path) and stem.params["stem"] == name
    # Each stem is the model's-rate stem of the widened input, folded to mono and resampled: nothing else.
    at_model_rate = demucs_reference_from(stem_model, widened)
    for name, ref in zip(SOURCES, at_model_rate):
        expected = resample(ref.mean(axis=0, keepdims=True), 44100, 48000)[:, : mix.shape[1]]
        np.testing.assert_allclose(stems[name].audio, expected, atol=1e-4, rtol=0)


def demucs_reference_from(stem_model, mix):
    from tunesmith.stems.separate import run_bag

    return run_bag(stem_model, mix, shifts=0, seed=0)


def test_a_48k_stereo_input_keeps_rate_length_and_channels(stem_model):
    mix = music(0.7, 48000, channels=2)
    stems = separate((mix, 48000), model=stem_model, shifts=1)
    assert {name: (s.audio.shape, s.sample_rate) for name, s in stems.items()} == {
        name: (mix.shape, 48000) for name in SOURCES}


def test_two_stems_is_the_stem_and_the_sum_of_the_rest(stem_model):
    mix = music(0.6, 44100)
    four = separate((mix, 44100), model=stem_model, shifts=0)
    two = separate((mix, 44100), model=stem_model, shifts=0, two_stems="vocals")
    assert list(two) == ["vocals", "no_vocals"]
    np.testing.assert_allclose(two["vocals"].audio, four["vocals"].audio, atol=1e-6)
    rest = four["drums"].audio + four["bass"].audio + four["other"].audio
    np.testing.assert_allclose(two["no_vocals"].audio, rest, atol=1e-5)


def test_clip_stems_keep_the_clips_prompt_and_seed_and_the_same_seed_repeats(stem_model):
    clip = Clip(music(0.6, 32000, channels=1), 32000, "funk groove", 42, {"model": "small"})
    first = separate(clip, model=stem_model, seed=3)  # a Clip's stems (Clip.stems went: no engine in the data class)
    again = separate(clip, model=stem_model, seed=3)
    other = separate(clip, model=stem_model, seed=4)
    drums = first["drums"]
    assert (drums.prompt, drums.seed, drums.sample_rate, drums.audio.shape) == ("funk groove", 42, 32000, (1, 19200))
    assert drums.params["model"] == "small" and drums.params["stems"]["shifts"] == 1
    assert np.array_equal(drums.audio, again["drums"].audio)
    assert not np.allclose(drums.audio, other["drums"].audio, atol=1e-6)  # another shift


def test_progress_counts_segments_to_the_end(stem_model):
    calls = []
    separate((music(1.6, 44100), 44100), model=stem_model, shifts=2, progress=lambda d, t: calls.append((d, t)))
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1] and len({t for _, t in calls}) == 1
    assert len(calls) >= 10  # two passes of five or six segments


@pytest.mark.parametrize("audio, kwargs, expected", [
    ((np.zeros((2, 0), np.float32), 44100), {}, "is empty"),
    ((np.zeros((2, 4410), np.float32), 44100), {}, "is silent: there is nothing to separate"),
    ((np.ones((3, 4410), np.float32) * 0.1, 44100), {}, "mono or stereo audio, not 3 channels"),
    ((np.ones((2, 4410), np.float32) * 0.1, 44100), {"two_stems": "kazoo"}, "two_stems (--two-stems) must be one"),
    ((np.ones((2, 4410), np.float32) * 0.1, 44100), {"shifts": -1}, "shifts (--shifts) must be a whole number"),
    ("no-such-file.wav", {}, "does not exist"),
])
def test_bad_inputs_are_refused_with_one_line(stem_model, audio, kwargs, expected):
    with pytest.raises((TunesmithError, InvalidParameter)) as refused:
        separate(audio, model=stem_model, **kwargs)
    assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_not_audio_is_refused(stem_model, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not music")
    with pytest.raises(TunesmithError, match="is not an audio file that can be read"):
        separate(path, model=stem_model)
