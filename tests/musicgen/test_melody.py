"""Melody conditioning: chroma features and parity with MusicgenMelodyForConditionalGeneration."""

import math

import numpy as np
import pytest
import torch

from tunesmith import MusicGen
from tunesmith.musicgen.conditioning import CHROMA_HOP, CHROMA_N_FFT, chroma_features
from tunesmith.errors import InvalidParameter, TunesmithError

from ..checkpoints import reference_generate, save_checkpoint

SR = 32000
PROMPTS = ["calm lofi piano", "deep house with a hypnotic bassline and bossa nova guitar"]


@pytest.fixture(scope="module", params=[False, True], ids=["mono", "stereo"])
def melody_ckpt(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("melody")
    return folder, save_checkpoint(folder, stereo=request.param, melody=True, seed=3)


def tone(freq, seconds=3.0):
    t = torch.arange(int(seconds * SR)) / SR
    return torch.sin(2 * math.pi * freq * t)


@pytest.mark.parametrize("freq, pitch_class", [(261.63, 0), (293.66, 2), (329.63, 4), (392.0, 7), (440.0, 9),
                                                (493.88, 11), (110.0, 9), (1046.5, 0)])
def test_chroma_of_a_tone_is_its_pitch_class(freq, pitch_class):
    chroma = chroma_features(tone(freq), SR)
    assert chroma.shape == (1 + 3 * SR // CHROMA_HOP, 12)
    assert (chroma.sum(dim=1) == 1).all() and (chroma.argmax(dim=1) == pitch_class).all()


def test_chroma_matches_an_independent_numpy_computation():
    """The same definition computed by hand: reflect-padded frames, periodic Hann, rfft power, filters."""
    from transformers.audio_utils import chroma_filter_bank

    rng = np.random.default_rng(0)
    t = np.arange(int(2.5 * SR)) / SR
    notes = rng.choice([261.63, 329.63, 392.0, 466.16, 587.33], size=5)
    audio = sum(np.sin(2 * np.pi * f * t) * (t > i * 0.5) for i, f in enumerate(notes)) + 0.01 * rng.normal(size=t.size)
    padded = np.pad(audio, CHROMA_N_FFT // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(CHROMA_N_FFT) / CHROMA_N_FFT)
    n_frames = 1 + audio.size // CHROMA_HOP
    frames = np.stack([padded[i * CHROMA_HOP:i * CHROMA_HOP + CHROMA_N_FFT] * window for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 / (window**2).sum()
    raw = chroma_filter_bank(sampling_rate=SR, num_frequency_bins=CHROMA_N_FFT, tuning=0, num_chroma=12) @ power.T
    expected = np.eye(12)[raw.argmax(axis=0)]
    ours = chroma_features(torch.from_numpy(audio).float(), SR).numpy()
    assert ours.shape == expected.shape and (ours == expected).mean() == 1.0


def test_short_melodies_are_zero_padded_to_one_fft():
    chroma = chroma_features(tone(440.0, 0.2), SR)
    assert chroma.shape == (1 + CHROMA_N_FFT // CHROMA_HOP, 12) and chroma[2].argmax() == 9


@pytest.mark.parametrize("with_melody", [True, False])
def test_greedy_generation_matches_reference(melody_ckpt, with_melody):
    folder, ref = melody_ckpt
    mg = MusicGen.from_pretrained(folder, device="cpu", dtype="float32")
    assert mg.is_melody
    stereo = mg.audio_channels == 2
    tune = (tone(392.0, 1.0) + tone(261.63, 1.0)).numpy()
    features = chroma_features(torch.from_numpy(tune), SR)[None].expand(2, -1, -1) if with_melody else None
    tokens = mg._model.text.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    per_channel = 4
    expected, _ = reference_generate(ref, tokens, 25 + per_channel - 1,
                                     **({} if features is None else {"input_features": features}))

    captured = []
    codec_decode = mg._model.codec.decode
    mg._model.codec.decode = lambda codes, *a: (captured.append(codes[0].clone()), codec_decode(codes, *a))[1]
    clips = mg.generate(PROMPTS, duration=0.5, temperature=0, melody=(tune, SR) if with_melody else None)
    mg._model.codec.decode = codec_decode
    codes = captured[0] if not stereo else torch.stack(captured[0].chunk(2), dim=2).flatten(1, 2)
    assert torch.equal(codes, expected) and len(torch.unique(codes)) > 8
    assert clips[0].audio.shape == ((2 if stereo else 1), 16000)


def test_long_form_cuts_the_chroma_at_each_window(melody_ckpt, monkeypatch):
    from tunesmith.musicgen import longform

    folder, _ = melody_ckpt
    mg = MusicGen.from_pretrained(folder, device="cpu", dtype="float32")
    mg._window_seconds = 1.0
    seen = []
    real = longform.window_chroma
    monkeypatch.setattr(longform, "window_chroma",
                        lambda chroma, start, rate, length, batch: seen.append((start, chroma.shape[0]))
                        or real(chroma, start, rate, length, batch))
    tune = tone(440.0, 1.5).numpy()
    clip, = mg.generate("jazz", duration=2.5, seed=1, context=0.4, melody=(tune, SR))
    assert clip.audio.shape[1] == 2.5 * SR
    assert [round(s, 2) for s, _ in seen] == [0.0, 0.6, 1.2, 1.8]
    chroma = chroma_features(torch.from_numpy(tune), SR)
    cut = real(chroma, 1.8, SR / CHROMA_HOP, 20, 1)[0]
    first = round(1.8 * SR / CHROMA_HOP)
    assert torch.equal(cut, chroma[(first + torch.arange(20)) % chroma.shape[0]])  # looped past the end


def test_melody_needs_a_melody_model(mono_model):
    with pytest.raises(InvalidParameter, match="cannot follow a melody"):
        mono_model.generate("jazz", duration=0.5, melody=(tone(440.0).numpy(), SR))


def test_silent_melody_is_refused(melody_ckpt):
    mg = MusicGen.from_pretrained(melody_ckpt[0], device="cpu", dtype="float32")
    with pytest.raises(TunesmithError, match="silent"):
        mg.generate("jazz", duration=0.5, melody=(np.zeros(SR), SR))


@pytest.mark.slow
def test_melody_from_the_cli(melody_ckpt, mono_ckpt, tmp_path):
    import soundfile as sf

    from ..test_cli import one_error_line, run

    tune = tmp_path / "hum.wav"
    sf.write(str(tune), tone(392.0, 1.0).numpy(), SR)
    proc = run("generate", "jazz", "-m", melody_ckpt[0], "--melody", tune, "-d", "0.5", "--seed", "1", "--quiet",
               "-o", tmp_path / "out.wav")
    assert proc.returncode == 0, proc.stderr
    assert sf.info(str(tmp_path / "out.wav")).frames == 16000
    line = one_error_line(run("generate", "jazz", "-m", mono_ckpt[0], "--melody", tune, "-d", "0.5", "--quiet",
                              "-o", tmp_path / "other.wav"))
    assert "cannot follow a melody" in line and not (tmp_path / "other.wav").exists()
    (tmp_path / "notes.txt").write_text("la la la")
    line = one_error_line(run("generate", "jazz", "-m", melody_ckpt[0], "--melody", tmp_path / "notes.txt"))
    assert "not an audio file" in line


def test_melody_graph_and_static_modes_match_eager(melody_ckpt):
    from tunesmith.musicgen.generate import generate_codes
    from tunesmith.musicgen.sampling import SamplingParams

    mg = MusicGen.from_pretrained(melody_ckpt[0], device="cpu", dtype="float32")
    model = mg._model
    states, mask = model.text.encode(PROMPTS)
    chroma = chroma_features(tone(392.0, 1.0), SR)[None].expand(2, -1, -1)
    runs = {mode: generate_codes(model.lm, states, mask, 20, SamplingParams(), torch.tensor([1, 2]), mode=mode,
                                 chroma=chroma) for mode in ("eager", "static", "graph")}
    assert torch.equal(runs["static"], runs["eager"]) and torch.equal(runs["graph"], runs["eager"])
