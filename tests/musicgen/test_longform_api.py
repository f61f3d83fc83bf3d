"""Long pieces, prompt schedules and continuation through the public API (tiny random checkpoints)."""

import numpy as np
import pytest
import torch

from tunesmith import Clip, MusicGen
from tunesmith.errors import InvalidParameter, TunesmithError


@pytest.fixture()
def short_window(mono_ckpt):
    """The tiny checkpoint with a 1 s window, so that a few seconds span several windows."""
    mg = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32")
    mg._window_seconds = 1.0
    return mg


def test_long_piece_is_exact_and_memory_stays_one_window(short_window, monkeypatch):
    lengths = []
    lm = short_window._model.lm
    real = type(lm).setup_cache

    def record(self, batch, max_len):
        lengths.append(max_len)
        return real(self, batch, max_len)

    monkeypatch.setattr(type(lm), "setup_cache", record)
    calls = []
    clip, = short_window.generate("ambient pads", duration=4.3, seed=2, context=0.4,
                                  progress=lambda done, total: calls.append((done, total)))
    assert clip.audio.shape == (1, round(4.3 * 50) * 640)
    assert len(lengths) == 7 and max(lengths) == 50 + 3 + 1  # windows of 1 s: never more than one window
    assert len({t for _, t in calls}) == 1 and calls[-1][0] == calls[-1][1]  # one fixed total, reached
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_long_piece_is_reproducible_and_continuous(short_window):
    a, = short_window.generate("slow jazz", duration=3.0, seed=5, context=0.4)
    b, = short_window.generate("slow jazz", duration=3.0, seed=5, context=0.4)
    np.testing.assert_array_equal(a.audio, b.audio)
    # no click on a window boundary: the steps there are like the steps elsewhere
    jumps = np.abs(np.diff(a.audio[0]))
    boundaries = [round(f * 640) for f in (50, 80, 110, 140)]  # new windows start every 0.6 s after the first
    assert max(jumps[b - 1] for b in boundaries) <= np.percentile(jumps, 99.99)
    # and no level jump: the level across each boundary is within the range of the piece's own levels
    width = 1600  # 50 ms

    def level(start):
        return np.sqrt(np.mean(a.audio[0, start:start + width] ** 2))

    levels = [level(i) for i in range(0, a.audio.shape[1] - width, width // 2)]
    assert all(min(levels) <= level(b - width // 2) <= max(levels) for b in boundaries)


def test_first_window_matches_a_short_generation(mono_model):
    """A piece inside one window is generated exactly as before long form existed."""
    short, = mono_model.generate("rock", duration=0.6, seed=9, temperature=0)
    mono_model._window_seconds = 0.8
    try:
        longer, = mono_model.generate("rock", duration=2.0, seed=9, temperature=0, context=0.3)
    finally:
        mono_model._window_seconds = mono_model.max_window
    head = slice(0, 12800)  # 0.4 s: far enough from where the short clip ends for the codec's convolutions
    np.testing.assert_allclose(longer.audio[:, head], short.audio[:, head], atol=1e-4)


def test_schedule_switches_text_per_window(short_window, monkeypatch):
    seen = []
    encode = short_window._model.text.encode
    monkeypatch.setattr(short_window._model.text, "encode", lambda texts: seen.append(tuple(texts)) or encode(texts))
    clip, = short_window.generate([[(0, "soft ambient intro"), (1.5, "drums enter")]], duration=3.0, seed=1,
                                  context=0.4)
    # windows start their new frames at 0, 1.0, 1.6, 2.2, 2.8 s
    assert seen == [("soft ambient intro",), ("drums enter",)]
    assert clip.prompt == "0s: soft ambient intro | 1.5s: drums enter"
    assert clip.params["schedule"] == [(0.0, "soft ambient intro"), (1.5, "drums enter")]


@pytest.mark.parametrize("schedule, message", [
    ([(1, "a")], "start at 0"), ([(0, "a"), (2, "b"), (1, "c")], "increase"), ([(0, "a"), (0, "b")], "increase"),
    ([(0, "a"), (9, "b")], "not inside"), ([(0, 3)], "schedule"),
])
def test_bad_schedules(short_window, schedule, message):
    with pytest.raises(InvalidParameter, match=message):
        short_window.generate([schedule], duration=3.0)


def test_context_must_fit_the_window(short_window):
    with pytest.raises(InvalidParameter, match="context"):
        short_window.generate("jazz", duration=3.0, context=1.5)


def _tone(seconds, rate=32000, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 331 * t)
    return np.stack([x] * channels).astype(np.float32)


def test_continuation_keeps_the_prompt_and_lasts_the_duration(mono_model):
    prompt = _tone(0.5)
    clip, = mono_model.generate("jazz", duration=1.2, seed=3, audio_prompt=(prompt, 32000))
    assert clip.audio.shape == (1, round(1.2 * 50) * 640)
    keep = 16000 - 640  # the last 20 ms crossfade into the codec's rendition
    np.testing.assert_array_equal(clip.audio[:, :keep], prompt[:, :keep])
    assert np.abs(clip.audio[:, 16000:]).max() > 0


def test_continuation_matches_reference(mono_ckpt, mono_model):
    """Greedy continuation: the codes after the prompt equal transformers' with the same input_values."""
    folder, ref = mono_ckpt
    prompt = _tone(0.4)
    clip, = mono_model.generate("calm lofi piano", duration=1.0, temperature=0, audio_prompt=(prompt, 32000))
    tokens = mono_model._model.text.tokenizer(["calm lofi piano"], return_tensors="pt")
    with torch.no_grad():
        expected = ref.generate(**tokens, input_values=torch.from_numpy(prompt)[None], do_sample=False,
                                guidance_scale=3.0, max_new_tokens=(50 - 20) + 3)
    assert expected.shape[-1] == clip.audio.shape[-1]
    np.testing.assert_allclose(clip.audio[:, 20 * 640:], expected[0, :, 20 * 640:].numpy(), atol=1e-4)


def test_continuation_inputs(mono_model, stereo_ckpt, tmp_path):
    import soundfile as sf

    stereo = MusicGen.from_pretrained(stereo_ckpt[0], device="cpu", dtype="float32")
    path = tmp_path / "riff.wav"
    sf.write(str(path), _tone(0.5, 44100).T, 44100)  # another rate, mono: resampled and widened
    clip, = stereo.generate("rock", duration=1.0, seed=1, audio_prompt=path)
    assert clip.audio.shape == (2, 32000)
    src = Clip(_tone(0.4, channels=2), 32000, "", 0)  # a Clip, stereo into a mono model: mixed down
    clip, = mono_model.generate("rock", duration=1.0, seed=1, audio_prompt=src)
    np.testing.assert_allclose(clip.audio[0, :10000], src.audio.mean(axis=0)[:10000], atol=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "not an audio file"),
    (lambda p: p.write_text("hello"), "not an audio file"),
    (lambda p: __import__("soundfile").write(str(p), np.zeros(16000), 16000), "silent"),
    (lambda p: None, "does not exist"),
])
def test_bad_prompt_files(mono_model, tmp_path, make, message):
    path = tmp_path / "prompt.wav"
    make(path)
    with pytest.raises(TunesmithError, match=message):
        mono_model.generate("jazz", duration=1.0, audio_prompt=path)


def test_prompt_longer_than_duration(mono_model):
    with pytest.raises(InvalidParameter, match="leaves nothing"):
        mono_model.generate("jazz", duration=0.5, audio_prompt=(_tone(0.6), 32000))


def test_continuation_composes_with_long_form(short_window):
    """A prompt longer than the context: its last seconds condition the first window; all of it is kept."""
    prompt = _tone(0.8)
    clip, = short_window.generate("jazz", duration=2.4, seed=4, context=0.4, audio_prompt=(prompt, 32000))
    assert clip.audio.shape == (1, round(2.4 * 50) * 640)
    np.testing.assert_array_equal(clip.audio[:, : 25600 - 640], prompt[:, : 25600 - 640])
