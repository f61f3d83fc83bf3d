"""Stable Audio 3 in Stability's layout: the same weights give the same audio as their diffusers-layout
folder; SAME-S (chunked attention with the midpoint shift, 3-tap output mapping) equals the reference written
from Stability's definitions (same_reference.py) within 1e-4; a broken checkpoint is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tunesmith.errors import CheckpointError

from . import same_reference
from .stability import save_stability_checkpoint
from .tiny import save_tiny_pipeline

SIZES = same_reference.Sizes()


@pytest.fixture(scope="module")
def medium_like(tmp_path_factory):
    """(diffusers folder, Stability folder, pipeline): a base Medium-like model (differential DiT, SAME-L)."""
    root = tmp_path_factory.mktemp("sa3-stability")
    pipe = save_tiny_pipeline(root / "diffusers", seed=2, differential=True, post_trained=False)
    save_stability_checkpoint(root / "stability", pipe, post_trained=False)
    return root / "diffusers", root / "stability", pipe


@pytest.fixture(scope="module")
def small_like(tmp_path_factory):
    """(Stability folder, pipeline, SAME-S tensors): a post-trained Small-like model with a SAME-S."""
    root = tmp_path_factory.mktemp("sa3-small")
    pipe = save_tiny_pipeline(root / "diffusers", seed=3)
    tensors = same_reference.random_same_s(SIZES)
    save_stability_checkpoint(root / "stability", pipe, same=(same_reference.same_s_config(SIZES), tensors))
    return root / "stability", pipe, tensors


def test_both_layouts_give_the_same_audio(medium_like):
    import tunesmith

    diffusers_folder, stability_folder, pipe = medium_like
    assert tunesmith.describe(stability_folder).family == "stable_audio3"
    assert tunesmith.describe(stability_folder).longest == 2.0  # sample_size / sample_rate
    ours = tunesmith.load(stability_folder, device="cpu", dtype="float32")
    theirs = tunesmith.load(diffusers_folder, device="cpu", dtype="float32")
    assert ours.config.sampler == theirs.config.sampler == "euler"
    kwargs = dict(duration=0.25, seed=4, steps=3, cfg=2.5)
    a, = ours.generate("warm pad", **kwargs)
    b, = theirs.generate("warm pad", **kwargs)
    assert np.abs(a.audio - b.audio).max() < 1e-5
    expected = pipe("warm pad", duration=0.25, num_inference_steps=3, guidance_scale=2.5,
                    generator=torch.Generator("cpu").manual_seed(4)).audios[0].numpy()
    assert np.abs(a.audio - expected).max() < 2e-5


def test_same_s_equals_the_reference(small_like):
    import tunesmith

    folder, _, tensors = small_like
    model = tunesmith.load(folder, device="cpu", dtype="float32")
    vae = model._parts.vae
    assert model.config.latent_multiple == 2 and vae.config.decoder_mapping_taps == 3
    g = torch.Generator().manual_seed(0)
    for length in (6, 5):  # whole chunks, and one latent short of them
        latents = torch.randn(1, SIZES.latent, length, generator=g)
        with torch.no_grad():
            ours = vae.decode(latents).sample
            reference = same_reference.decode(latents, tensors, SIZES)
        assert ours.shape == reference.shape == (1, 2, 6 * 32)
        assert (ours - reference).abs().max() < 1e-4
        assert reference.std() > 0.05
    unshifted = same_reference.decode(latents, tensors, SIZES, midpoint_shift=False)
    assert (unshifted - reference).abs().max() > 1e-2  # the shifted chunks matter, so the check sees them
    audio = 0.5 * torch.randn(1, 2, 32 * 5 + 7, generator=g)
    with torch.no_grad():
        ours, reference = vae.encode(audio).latents, same_reference.encode(audio, tensors, SIZES)
    assert ours.shape == reference.shape == (1, SIZES.latent, 6)
    assert (ours - reference).abs().max() < 1e-4


def test_generate_with_same_s_equals_the_reference(small_like):
    """The DiT's latents as diffusers' pipeline makes them, decoded by the reference SAME-S."""
    import tunesmith

    folder, pipe, tensors = small_like
    model = tunesmith.load(folder, device="cpu", dtype="float32")
    assert model.config.sampler == "pingpong" and model.config.steps == 8
    clip, = model.generate("rain on a tin roof", duration=0.25, seed=6, steps=4)
    latents = pipe("rain on a tin roof", duration=0.25, num_inference_steps=4, output_type="latent",
                   generator=torch.Generator("cpu").manual_seed(6)).audios
    assert latents.shape[2] == 32  # an even count: whole SAME-S chunks
    expected = same_reference.decode(latents, tensors, SIZES)[0, :, :1024].clamp(-1, 1).numpy()
    assert np.abs(clip.audio - expected).max() < 1e-4


def test_odd_latent_counts_round_up_to_whole_chunks(small_like):
    import tunesmith

    model = tunesmith.load(small_like[0], device="cpu", dtype="float32")
    clip, = model.generate("calm piano", duration=0.24, seed=1, steps=2)  # 30.7 latents -> 32
    assert clip.audio.shape == (2, int(0.24 * 4096))


def test_a_broken_checkpoint_is_one_line(small_like, tmp_path):
    import shutil

    import tunesmith
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "broken"
    shutil.copytree(small_like[0], folder)
    tensors = load_file(str(folder / "model.safetensors"))
    name = "model.model.transformer.layers.0.self_attn.to_out.weight"
    tensors[name] = tensors[name][:, :-1].contiguous()
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model.safetensors: model.model.transformer.layers.0.self_attn."
                                              r"to_out.weight has shape \(32, 31\), expected \(32, 32\)"):
        tunesmith.load(folder, device="cpu", dtype="float32")
    tensors[name] = torch.zeros(32, 32)
    tensors["model.model.extra.weight"] = torch.zeros(2)
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="holds 1 tensor.s. this model does not have, e.g. model.model.extra"):
        tunesmith.load(folder, device="cpu", dtype="float32")
    config = json.loads((folder / "model_config.json").read_text())
    del config["model"]["pretransform"]
    (folder / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="model_config.json lacks model.pretransform.config"):
        tunesmith.load(folder, device="cpu", dtype="float32")


@pytest.mark.parametrize("which", ["SAME-S", "SAME-L"])
def test_windowed_decode_has_exact_seams(small_like, medium_like, which, monkeypatch):
    import tunesmith
    from tunesmith.stable_audio3 import decode as windowed

    folder = small_like[0] if which == "SAME-S" else medium_like[1]
    vae = tunesmith.load(folder, device="cpu", dtype="float32")._parts.vae
    latents = torch.randn(2, SIZES.latent, 23, generator=torch.Generator().manual_seed(5))
    samples = 23 * 32 - 5
    with torch.no_grad():
        whole = vae.decode(latents).sample[:, :, :samples].clamp(-1, 1)
        for window in (4, 6):
            reports = []
            joined = windowed.decode(vae, latents, samples, window=window, report=lambda: reports.append(1))
            assert joined.shape == whole.shape and (joined - whole).abs().max() < 1e-5
            assert len(reports) == windowed.window_count(23, vae, window) == -(-23 // window)
        # the margins are what makes the seams exact: without them the windows' edges show
        monkeypatch.setattr(windowed, "margin_and_alignment", lambda vae: (0, 2))
        assert (windowed.decode(vae, latents, samples, window=4) - whole).abs().max() > 1e-3


def test_progress_counts_the_steps_then_the_windows(small_like):
    import tunesmith

    model = tunesmith.load(small_like[0], device="cpu", dtype="float32")
    calls = []
    model.generate("calm piano", duration=0.25, seed=1, steps=3, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]  # 32 latents: one window


def test_the_text_encoder_comes_from_beside_the_weights_or_the_hub(small_like, tmp_path):
    import shutil

    from tunesmith.stable_audio3.load import also_needed

    assert also_needed(small_like[0]) == []  # T5Gemma is beside the weights
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model_config.json", "model.safetensors"):
        shutil.copy(small_like[0] / name, bare / name)
    assert also_needed(bare) == ["google/t5gemma-b-b-ul2"]


def test_a_dit_reading_log_snr_time_steps_is_refused(small_like, tmp_path):
    import shutil

    import tunesmith

    folder = tmp_path / "logsnr"
    shutil.copytree(small_like[0], folder)
    config = json.loads((folder / "model_config.json").read_text())
    config["model"]["diffusion"]["config"]["timestep_features_logsnr"] = True
    (folder / "model_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="reads its time step in a way Stable Audio 3's checkpoints do not"):
        tunesmith.load(folder, device="cpu", dtype="float32")
