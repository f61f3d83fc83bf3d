"""MusicGen on CUDA: greedy codes in float32 are the CPU's (stereo, melody, continuation, long form),
sampling in a batch is the CPU's, the default bfloat16 runs, and a failed CUDA run is retried on the CPU.

The codes are compared, not the audio: the decoder's choices are exact, EnCodec's float sums are not."""

import math

import numpy as np
import pytest
import torch

from tunesmith import MusicGen
from tunesmith.musicgen import model as model_module
from tunesmith.musicgen.lm import MusicGenLM

from ..checkpoints import save_checkpoint

DEVICE = "cuda"  # the device under test: a scratch copy with "cpu" here runs these bodies on any machine
SR = 32000

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def melody_ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("melody")
    save_checkpoint(folder, melody=True, seed=3)
    return folder


def tone(seconds: float, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * math.pi * freq * t))[None].astype(np.float32)  # (1, samples)


def generate_with_codes(mg: MusicGen, monkeypatch, *args, **kwargs):
    """mg.generate(...) -> (clips, the codes it decoded [B, K, N] on the CPU)."""
    captured = []
    real = model_module.decode_codes

    def capture(codec, codes, channels):
        captured.append(codes.cpu())
        return real(codec, codes, channels)

    monkeypatch.setattr(model_module, "decode_codes", capture)
    clips = mg.generate(*args, **kwargs)
    monkeypatch.setattr(model_module, "decode_codes", real)
    return clips, captured[-1]


def on_both(folder, monkeypatch, *args, **kwargs):
    """The same call on the CPU and on DEVICE, both float32 -> ((clips, codes) on the CPU, on DEVICE)."""
    window = kwargs.pop("window", None)  # long form's window in seconds (None: the model's)
    results = []
    for device in ("cpu", DEVICE):
        mg = MusicGen.from_pretrained(folder, device=device, dtype="float32")
        mg._window_seconds = window or mg._window_seconds
        results.append(generate_with_codes(mg, monkeypatch, *args, **kwargs))
    assert all(c.params["device"] == DEVICE for c in results[1][0])  # not a retry on the CPU
    return results


@pytest.mark.parametrize("case", ["stereo", "melody", "continuation"])
def test_greedy_codes_match_the_cpu(case, stereo_ckpt, mono_ckpt, melody_ckpt, monkeypatch):
    folder, kwargs = {
        "stereo": (stereo_ckpt[0], {}),
        "melody": (melody_ckpt, dict(melody=(tone(1.0, 392.0) + tone(1.0, 261.6), SR))),
        "continuation": (mono_ckpt[0], dict(audio_prompt=(tone(0.4), SR))),
    }[case]
    duration = 1.0 if case == "continuation" else 0.5
    (cpu_clips, cpu), (clips, codes) = on_both(folder, monkeypatch, "calm lofi piano", duration=duration, seed=1,
                                               temperature=0, **kwargs)
    assert torch.equal(codes, cpu) and len(torch.unique(codes)) > 8
    assert codes.shape[-1] == round(duration * 50)
    channels = 2 if case == "stereo" else 1
    assert clips[0].audio.shape == cpu_clips[0].audio.shape == (channels, round(duration * SR))
    np.testing.assert_allclose(clips[0].audio, cpu_clips[0].audio, atol=1e-4, rtol=0)


def test_long_form_greedy_codes_match_the_cpu(mono_ckpt, monkeypatch):
    """1 s windows: 2.5 s is four windows, each continuing the last 0.4 s (a CUDA graph per window length)."""
    (_, cpu), (clips, codes) = on_both(mono_ckpt[0], monkeypatch, "ambient pads", duration=2.5, seed=2,
                                       temperature=0, context=0.4, window=1.0)
    assert codes.shape == (1, 4, 125) and torch.equal(codes, cpu)
    assert clips[0].audio.shape == (1, round(2.5 * SR)) and clips[0].check.ok


def test_sampled_variations_in_one_batch_match_the_cpu(mono_ckpt, monkeypatch):
    """Two prompts, two variations each, sampled: the noise is a hash of (seed, step), so the device's
    draws are the CPU's and each row keeps its seed."""
    prompts = ["calm lofi piano", "deep house with a hypnotic bassline"]
    (_, cpu), (clips, codes) = on_both(mono_ckpt[0], monkeypatch, prompts, duration=0.5, seed=3, num_variations=2)
    assert torch.equal(codes, cpu)
    assert [c.seed for c in clips] == [3, 4, 3, 4] and [c.prompt for c in clips] == [prompts[0]] * 2 + [prompts[1]] * 2
    assert not torch.equal(codes[0], codes[1]) and not torch.equal(codes[0], codes[2])
    assert all(c.audio.shape == (1, SR // 2) and np.isfinite(c.audio).all() for c in clips)


def test_default_half_precision_runs(stereo_ckpt):
    mg = MusicGen.from_pretrained(stereo_ckpt[0], device=DEVICE)
    if DEVICE == "cuda":
        assert mg.dtype == torch.bfloat16  # the H200 computes bfloat16
    clips = mg.generate(["calm lofi piano", "rock drums"], duration=0.5, seed=5)
    for clip in clips:
        assert clip.params["device"] == DEVICE and clip.params["dtype"] == str(mg.dtype)[6:]
        assert clip.audio.shape == (2, SR // 2) and np.isfinite(clip.audio).all() and np.abs(clip.audio).max() > 0


def test_a_failed_run_is_retried_on_the_cpu_and_the_model_goes_back(mono_ckpt, monkeypatch, caplog):
    """An out-of-memory error while allocating the KV cache on the GPU: the clip comes from the CPU in
    float32 and says so; the model is back on the GPU in its dtype, and the next call runs there."""
    mg = MusicGen.from_pretrained(mono_ckpt[0], device=DEVICE)
    home, dtype = mg.device, mg.dtype
    real = MusicGenLM.setup_cache
    failures = [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")]
    devices = []

    def setup_cache(self, batch, max_len):
        devices.append(self.embed.device.type)
        if failures:
            raise failures.pop()
        return real(self, batch, max_len)

    monkeypatch.setattr(MusicGenLM, "setup_cache", setup_cache)
    with caplog.at_level("WARNING", logger="tunesmith"):
        clip, = mg.generate("jazz", duration=0.3, seed=4)
    assert devices == [home.type, "cpu"] and "retrying once on the CPU" in caplog.text
    assert clip.params["device"] == "cpu" and clip.params["dtype"] == "float32"
    assert clip.audio.shape == (1, round(0.3 * SR)) and np.isfinite(clip.audio).all()
    lm = mg._model.lm
    assert mg.device == home and mg.dtype == dtype
    assert lm.embed.device.type == home.type and lm.embed.dtype == dtype
    assert next(mg._model.codec.parameters()).device.type == home.type
    again, = mg.generate("jazz", duration=0.3, seed=4)
    assert again.params["device"] == DEVICE and devices[-1] == home.type and np.isfinite(again.audio).all()
