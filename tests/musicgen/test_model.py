"""The Python API on a tiny random checkpoint."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from tunesmith import Clip, MusicGen
from tunesmith.errors import InvalidParameter, TunesmithError


def test_generate_returns_clips_with_metadata(mono_model):
    clips = mono_model.generate(["deep house with a hypnotic bassline", "bossa nova guitar"], duration=0.5, seed=1)
    assert len(clips) == 2 and all(isinstance(c, Clip) for c in clips)
    for clip, prompt in zip(clips, ["deep house with a hypnotic bassline", "bossa nova guitar"]):
        assert clip.audio.shape == (1, 16000) and clip.audio.dtype == np.float32
        assert clip.sample_rate == 32000 and clip.prompt == prompt and clip.seed == 1
        assert clip.params["duration"] == 0.5 and clip.params["top_k"] == 250 and clip.params["cfg"] == 3.0
        assert clip.check is not None and clip.duration == 0.5


def test_stereo_clips_have_two_channels(stereo_ckpt):
    mg = MusicGen.from_pretrained(stereo_ckpt[0], device="cpu")
    assert mg.audio_channels == 2
    clip, = mg.generate("ambient pads", duration=0.4, seed=3)
    assert clip.audio.shape == (2, 12800) and not np.allclose(clip.audio[0], clip.audio[1])


def test_same_seed_same_audio_other_seed_other_audio(mono_model):
    a, = mono_model.generate("slow jazz", duration=0.4, seed=7)
    b, = mono_model.generate("slow jazz", duration=0.4, seed=7)
    c, = mono_model.generate("slow jazz", duration=0.4, seed=8)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert np.abs(a.audio - c.audio).max() > 1e-3


def test_random_seed_is_reported_and_reproduces(mono_model):
    a, = mono_model.generate("fast rock drums", duration=0.3)
    b, = mono_model.generate("fast rock drums", duration=0.3, seed=a.seed)
    np.testing.assert_array_equal(a.audio, b.audio)


def test_variations_have_own_seeds_and_reproduce_alone(mono_model):
    clips = mono_model.generate(["calm lofi piano", "deep house"], duration=0.3, seed=10, num_variations=3)
    assert [(c.prompt, c.seed) for c in clips] == [("calm lofi piano", 10), ("calm lofi piano", 11),
                                                   ("calm lofi piano", 12), ("deep house", 10),
                                                   ("deep house", 11), ("deep house", 12)]
    assert np.abs(clips[0].audio - clips[1].audio).max() > 1e-3
    alone, = mono_model.generate("calm lofi piano", duration=0.3, seed=12)
    np.testing.assert_allclose(alone.audio, clips[2].audio, atol=1e-5)


def test_progress_callable_sees_a_fixed_total(mono_model):
    calls = []
    mono_model.generate("ambient", duration=0.2, seed=0, progress=lambda done, total: calls.append((done, total)))
    totals = {t for _, t in calls}
    assert totals == {10 + 3}  # frames + the delay of the last codebook
    assert [d for d, _ in calls] == list(range(1, 14))


def test_progress_bar_on_stderr(mono_model, capsys):
    mono_model.generate("ambient", duration=0.2, seed=0, progress=True)
    assert "13/13" in capsys.readouterr().err


def test_frames_are_exact(mono_model):
    for duration in (0.02, 0.5, 1.23):
        clip, = mono_model.generate("jazz", duration=duration, seed=0)
        assert clip.audio.shape[1] == round(duration * 50) * 640


def test_save_by_extension(mono_model, tmp_path):
    clip, = mono_model.generate("synth", duration=0.3, seed=2)
    for name, fmt in (("a.wav", "WAV"), ("a.flac", "FLAC")):
        path = clip.save(tmp_path / name)
        info = sf.info(str(path))
        assert info.format == fmt and info.samplerate == 32000 and info.frames == 9600 and info.channels == 1
        data, _ = sf.read(str(path), dtype="float32", always_2d=True)
        np.testing.assert_allclose(data[:, 0], np.clip(clip.audio[0], -1, 1), atol=1 / 32768 + 1e-6)
    with pytest.raises(InvalidParameter, match="unsupported output format"):
        clip.save(tmp_path / "a.xyz")
    with pytest.raises(TunesmithError, match="does not exist"):
        clip.save(tmp_path / "missing" / "a.wav")
    with pytest.raises(TunesmithError, match="it is a folder; give a file name"):
        clip.save(tmp_path)


def test_numpy_numbers_are_accepted(mono_model):
    clip, = mono_model.generate("jazz", duration=np.float32(0.2), seed=np.int64(4), temperature=np.float64(1),
                                top_k=np.int32(50), cfg=np.float32(3))
    again, = mono_model.generate("jazz", duration=0.2, seed=4, top_k=50)
    assert clip.seed == 4 and type(clip.seed) is int and np.array_equal(clip.audio, again.audio)


def test_float16_on_the_cpu_runs_and_stays_near_float32(mono_ckpt):
    """oneDNN packs float16 weights only on CPUs with AVX512-FP16: elsewhere plain linears do it."""
    half = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float16")
    full = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32")
    a, = half.generate("jazz", duration=0.4, seed=1, temperature=0)
    b, = full.generate("jazz", duration=0.4, seed=1, temperature=0)
    assert half.dtype == torch.float16 and a.audio.shape == b.audio.shape
    assert np.abs(a.audio - b.audio).max() < 0.05 * np.abs(b.audio).max()


@pytest.mark.parametrize("kwargs, message", [
    (dict(duration=0), "positive"), (dict(duration=-1), "positive"), (dict(duration=math.nan), "positive"),
    (dict(duration=math.inf), "positive"), (dict(duration=4000), "3600 s"), (dict(duration=0.001), "one frame"),
    (dict(duration="5"), "positive"), (dict(temperature=-0.5), "temperature"), (dict(top_k=-3), "top_k"),
    (dict(top_p=2), "top_p"), (dict(cfg=0), "cfg"), (dict(seed=-1), "seed"), (dict(seed=2**40), "seed"),
    (dict(num_variations=0), "num_variations"), (dict(progress="yes"), "progress"),
])
def test_bad_parameters_are_refused(mono_model, kwargs, message):
    args = dict(duration=0.2) | kwargs
    with pytest.raises(InvalidParameter, match=message):
        mono_model.generate("jazz", **args)


@pytest.mark.parametrize("prompts", [[], None, [3], "", " \n", ["jazz", ""]])
def test_bad_prompts_are_refused(mono_model, prompts):
    with pytest.raises(InvalidParameter, match="prompt"):
        mono_model.generate(prompts, duration=0.2)


@pytest.mark.parametrize("kwargs, message", [(dict(device="tpu"), "unknown device"),
                                             (dict(device="cuda"), "not available"),
                                             (dict(dtype="int4"), "dtype must be")])
def test_bad_device_or_dtype(mono_ckpt, kwargs, message):
    if kwargs.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TunesmithError, match=message):
        MusicGen.from_pretrained(mono_ckpt[0], **kwargs)


def _logit_drift(reference: MusicGen, other: MusicGen) -> float:
    """Largest teacher-forced logit difference, in standard deviations of the reference's logits."""
    codes = torch.randint(0, 64, (1, 4, 20))
    logits = []
    for model in (reference._model, other._model):
        states, mask = model.text.encode(["calm lofi piano"])
        with torch.inference_mode():
            model.lm.setup_cache(batch=1, max_len=20)
            model.lm.set_condition(states, mask)
            logits.append(model.lm(codes, torch.arange(20)).float())
    return float((logits[1] - logits[0]).abs().max() / logits[0].std())


@pytest.mark.parametrize("kwargs, limit", [(dict(dtype="bfloat16"), 0.1), (dict(quantize="int8"), 0.1),
                                           (dict(quantize="int4"), 1.5)])  # tiny, peaked weights: int4 is coarse
def test_reduced_precision_stays_close_to_float32(mono_ckpt, mono_model, kwargs, limit):
    mg = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", **({"dtype": "float32"} | kwargs))
    if "dtype" in kwargs:
        assert mg._model.lm.heads.weight.dtype == torch.bfloat16
    drift = _logit_drift(mono_model, mg)
    assert 0 < drift < limit, f"{kwargs} logits off by {drift:.3f} standard deviations"
    clip, = mg.generate("calm lofi piano", duration=0.3, seed=1)
    assert clip.audio.dtype == np.float32 and np.isfinite(clip.audio).all()
    assert clip.params["quantize"] == kwargs.get("quantize")


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "avx2"])
def test_the_cpu_default_is_bfloat16_only_where_native(mono_ckpt, monkeypatch, caplog, native):
    """Without native bfloat16 (AVX2 CPUs: oneDNN will not even pack it) bfloat16 products run at a fraction of
    float32's speed, so float32 is the default there, said at debug level; bfloat16 where it is native."""
    from tunesmith import device
    from tunesmith.musicgen.linear import cpu_packing_available

    assert cpu_packing_available(torch.bfloat16) or not device.cpu_has_native_bf16()  # this machine agrees
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    with caplog.at_level("DEBUG", logger="tunesmith"):
        mg = MusicGen.from_pretrained(mono_ckpt[0], device="cpu")
    assert mg.dtype == mg._model.lm.embed.dtype == (torch.bfloat16 if native else torch.float32)
    assert ("no native bfloat16" in caplog.text) != native
    clip, = mg.generate("calm lofi piano", duration=0.2, seed=1)
    assert clip.params["dtype"] == ("bfloat16" if native else "float32")


def _step_drift(reference: MusicGen, other: MusicGen, seed: int) -> float:
    """_logit_drift fed one position at a time through the cache, as decode steps run (2 rows: guidance)."""
    codes = torch.randint(0, 64, (1, 4, 20), generator=torch.Generator().manual_seed(seed)).repeat(2, 1, 1)
    logits = []
    for model in (reference._model, other._model):
        states, mask = model.text.encode(["calm lofi piano", ""])
        with torch.inference_mode():
            model.lm.setup_cache(batch=2, max_len=20)
            model.lm.set_condition(states, mask)
            logits.append(torch.cat([model.lm(codes[:, :, t:t + 1], torch.tensor([t]), kv_len=t + 1)
                                     for t in range(20)], 2).float())
    return float((logits[1] - logits[0]).abs().max() / logits[0].std())


def test_int8_through_fbgemm_stays_close_to_float32(mono_ckpt, mono_model, monkeypatch):
    """int8 on CPUs below AVX-512 (fbgemm, forced here on any x86 CPU): decode steps round the activations too
    (one scale per step), the heads stay float32, prefills widen the int8 weights. On this 32-wide decoder the
    steps drift 1.5-2x as far as weight-only int8 (measured over seeds: 0.09-0.13 standard deviations against
    0.05-0.07); the prefill stays within weight-only int8's bound."""
    from tunesmith.musicgen import cpu_kernels, linear

    if not any(e in torch.backends.quantized.supported_engines for e in ("x86", "fbgemm")):
        pytest.skip("this torch has no x86 quantized engine")
    monkeypatch.setattr(cpu_kernels, "library", lambda: None)  # no AVX-512 int8 kernel
    monkeypatch.setattr(linear, "packed_int8", lambda: True)
    mg = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32", quantize="int8")
    lm = mg._model.lm
    assert all(isinstance(m, linear.DynamicInt8Linear) for m in (lm.layers[0].fc1, lm.layers[-1].attn.qkv,
                                                                  lm.layers[0].cross.q, lm.layers[0].attn.out))
    assert not isinstance(lm.heads, linear.DynamicInt8Linear)
    assert 0 < _logit_drift(mono_model, mg) < 0.1  # a prefill of 20 positions: weight-only int8's bound
    drifts = [_step_drift(mono_model, mg, seed) for seed in range(3)]
    assert all(0 < d < 0.2 for d in drifts), drifts
    greedy, = mg.generate("calm lofi piano", duration=0.3, seed=1, temperature=0)
    reference, = mono_model.generate("calm lofi piano", duration=0.3, seed=1, temperature=0)
    assert greedy.check.ok and np.isfinite(greedy.audio).all() and greedy.params["quantize"] == "int8"
    assert np.corrcoef(greedy.audio.ravel(), reference.audio.ravel())[0, 1] > 0.95  # measured: 0.9998


def test_gpu_failure_retries_once_on_cpu(mono_ckpt, caplog, monkeypatch):
    """A device error (or a failed output check) on a GPU falls back to the CPU and says so."""
    mg = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32")
    expected, = mg.generate("jazz", duration=0.2, seed=4)
    mg.device = torch.device("cuda")  # pretend: the model really sits on the CPU
    moves = []
    monkeypatch.setattr(mg._model, "to", lambda device, dtype: moves.append((device.type, dtype)) or mg._model)
    real_run = MusicGen._run
    calls = []

    def flaky_run(self, *args):
        calls.append(self.device.type)
        if self.device.type == "cuda":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real_run(self, *args)

    monkeypatch.setattr(MusicGen, "_run", flaky_run)
    with caplog.at_level("WARNING", logger="tunesmith"):
        clip, = mg.generate("jazz", duration=0.2, seed=4)
    assert calls == ["cuda", "cpu"] and moves == [("cpu", torch.float32), ("cuda", torch.float32)]
    assert "retrying once on the CPU" in caplog.text and "illegal memory access" in caplog.text
    np.testing.assert_array_equal(clip.audio, expected.audio)
    assert mg.device.type == "cuda"
