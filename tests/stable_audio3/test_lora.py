"""Stable Audio 3 adapters in Stability's form: tunesmith's merged weights give the audio of the un-merged
reference written from Stability's definitions (lora_reference.py) within 1e-4 (float32, CPU), stacked in order,
in both layouts; every adapter type merges as the reference computes it; bad adapters are one line before any
weight is read."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tunesmith
from tunesmith.errors import InvalidParameter, TunesmithError

from .lora_reference import random_adapter, stability_layers, with_adapters, write_adapter
from .stability import save_stability_checkpoint
from .tiny import save_tiny_pipeline

TOLERANCE = 1e-4
DURATION = 0.25


@pytest.fixture(scope="module")
def medium_like(tmp_path_factory):
    """(diffusers folder, Stability folder, pipeline): differential attention, so Medium's row order is crossed."""
    root = tmp_path_factory.mktemp("sa3-lora")
    pipe = save_tiny_pipeline(root / "diffusers", seed=5, differential=True, post_trained=False)
    save_stability_checkpoint(root / "stability", pipe, post_trained=False)
    return root / "diffusers", root / "stability", pipe


def audio_of(pipe, seed: int = 2) -> np.ndarray:
    return pipe("calm piano", generator=torch.Generator("cpu").manual_seed(seed), duration=DURATION,
                num_inference_steps=3).audios[0].numpy()


def generated(folder, lora, seed: int = 2) -> np.ndarray:
    model = tunesmith.load(folder, device="cpu", dtype="float32", lora=lora)
    clip, = model.generate("calm piano", duration=DURATION, seed=seed, steps=3)
    return clip


def test_stacked_lora_and_dora_equal_the_reference_in_both_layouts(medium_like, tmp_path):
    diffusers_folder, stability_folder, pipe = medium_like
    lora = random_adapter(pipe, "lora", rank=2, seed=1)
    dora = random_adapter(pipe, "dora-rows", rank=3, seed=2, size=0.5)
    lora_config = dict(rank=2, alpha=4.0, adapter_type="lora")
    dora_config = dict(rank=3, alpha=3, adapter_type="dora-rows")
    first = write_adapter(tmp_path / "style.safetensors", lora, lora_config)
    second = write_adapter(tmp_path / "detail.safetensors", dora, dora_config)
    reference = with_adapters(pipe, [("lora", lora, lora_config, 0.8), ("dora-rows", dora, dora_config, -0.6)])
    expected = audio_of(reference)
    assert np.abs(expected - audio_of(pipe)).max() > 0.02  # the adapters move the audio
    for folder in (stability_folder, diffusers_folder):
        clip = generated(folder, [(first, 0.8), f"{second}@-0.6"])
        assert clip.audio.shape == expected.shape
        assert np.abs(clip.audio - expected).max() < TOLERANCE, folder.name
    assert clip.params["lora"] == [[str(first), 0.8], [str(second), -0.6]]
    # the order matters (DoRA renormalises what the LoRA made), and tunesmith keeps it
    swapped = audio_of(with_adapters(pipe, [("dora-rows", dora, dora_config, -0.6), ("lora", lora, lora_config, 0.8)]))
    assert np.abs(swapped - expected).max() > 1e-3


def merged_weights(folder, lora) -> dict[str, torch.Tensor]:
    model = tunesmith.load(folder, device="cpu", dtype="float32", lora=lora)
    parts = model._parts
    return {name: m.weight.detach().clone() for name, m in
            {**{"transformer." + n: m for n, m in parts.transformer.named_modules()},
             "seconds.linear": parts.seconds.linear}.items() if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d))}


def reference_weights(pipe) -> dict[str, torch.Tensor]:
    return {name: m.weight.detach().clone() for name, m in
            {**{"transformer." + n: m for n, m in pipe.transformer.named_modules()},
             "seconds.linear": pipe.duration_embedder.linear}.items() if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d))}


@pytest.mark.parametrize("kind", ["dora-cols", "bora", "lora-xs", "dora-rows-xs", "dora-cols-xs", "bora-xs"])
def test_every_adapter_type_merges_as_the_reference(medium_like, tmp_path, kind):
    _, stability_folder, pipe = medium_like
    tensors = random_adapter(pipe, kind, rank=2, seed=7)
    config = dict(rank=2, alpha=2.0, adapter_type=kind)
    path = write_adapter(tmp_path / f"{kind}.safetensors", tensors, config)
    ours = merged_weights(stability_folder, f"{path}@1.3")
    theirs = reference_weights(with_adapters(pipe, [(kind, tensors, config, 1.3)]))
    base = reference_weights(pipe)
    for name in ours:
        assert torch.allclose(ours[name], theirs[name], atol=2e-5, rtol=1e-5), name
    assert all((ours[n] - base[n]).abs().max() > 1e-3 for n in ours)  # every layer moved


def test_legacy_dora_reads_its_magnitude_shape_and_include_exclude_choose_layers(medium_like, tmp_path):
    """adapter_type "dora" with magnitudes saved [1, in] is dora-cols; include/exclude leave layers as they were."""
    _, stability_folder, pipe = medium_like
    tensors = random_adapter(pipe, "dora-cols", rank=2, seed=9)
    saved = {k: v.reshape(1, -1) if k.endswith("magnitude") else v for k, v in tensors.items()}
    config = dict(rank=2, adapter_type="dora", include=["layers.1", "to_timestep_embed"], exclude=["cross_attn"])
    path = write_adapter(tmp_path / "legacy.safetensors", saved, config)
    ours = merged_weights(stability_folder, path)
    theirs = reference_weights(with_adapters(pipe, [("dora-cols", tensors, config, 1.0)]))
    base = reference_weights(pipe)
    moved = {n for n in ours if not torch.equal(ours[n], base[n])}
    for name in ours:
        assert torch.allclose(ours[name], theirs[name], atol=2e-5, rtol=1e-5), name
    assert moved and all(("transformer_blocks.1." in n and "cross_attn" not in n) or "to_timestep_embed" in n
                         for n in moved)
    assert "transformer.transformer_blocks.0.self_attn.to_qkv" not in moved


def test_scale_zero_is_the_base_exactly(medium_like, tmp_path):
    _, stability_folder, pipe = medium_like
    tensors = random_adapter(pipe, "dora-rows", rank=2, seed=4)
    path = write_adapter(tmp_path / "zero.safetensors", tensors, dict(rank=2, adapter_type="dora-rows"))
    ours, base = merged_weights(stability_folder, f"{path}@0"), reference_weights(pipe)
    assert all(torch.equal(ours[n], base[n]) for n in ours)


def refused(folder, lora, monkeypatch) -> str:
    """The one-line refusal of load(lora=...), raised before any weight of the model is read."""
    from tunesmith.stable_audio3 import load

    def no_loading(*args, **kwargs):
        raise AssertionError("the model's weights were read before the adapter was refused")

    monkeypatch.setattr(load, "load_folder", no_loading)
    with pytest.raises((TunesmithError, InvalidParameter)) as err:
        tunesmith.load(folder, device="cpu", dtype="float32", lora=lora)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_bad_adapters_are_one_line_before_loading(medium_like, tmp_path, monkeypatch):
    diffusers_folder, stability_folder, pipe = medium_like
    # another size: layers twice as wide as the model's; the first layer named
    wide = random_adapter(pipe, "lora", rank=2, seed=1)
    wide = {k: torch.cat([v, v], dim=1) if k.endswith("lora_A") else v for k, v in wide.items()}
    path = write_adapter(tmp_path / "wide.safetensors", wide, dict(rank=2))
    first = sorted(wide)[0].split(".parametrizations")[0]  # safetensors keeps its keys sorted
    for folder in (stability_folder, diffusers_folder):
        message = refused(folder, path, monkeypatch)
        assert "does not fit" in message and f"layer {first} " in message
    # another family: an ACE-Step (PEFT) file
    from safetensors.torch import save_file

    peft = tmp_path / "acestep.safetensors"
    save_file({"base_model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 8),
               "base_model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(8, 2)}, str(peft))
    assert "not a tensor of Stability's adapters" in refused(stability_folder, peft, monkeypatch)
    # a layer the model has not
    ghost = write_adapter(tmp_path / "ghost.safetensors",
                          {"model.transformer.layers.9.self_attn.to_out.parametrizations.weight.0.lora_A": torch.zeros(2, 32),
                           "model.transformer.layers.9.self_attn.to_out.parametrizations.weight.0.lora_B": torch.zeros(32, 2)},
                          dict(rank=2))
    assert "its layer model.transformer.layers.9.self_attn.to_out is none of the model's" in refused(
        stability_folder, ghost, monkeypatch)
    # scale outside -2..2, a pickle, a missing file, a folder, an unknown type, a layer without its magnitude
    good = write_adapter(tmp_path / "good.safetensors", random_adapter(pipe, "lora", 2, seed=3), dict(rank=2))
    assert "from -2 to 2" in refused(stability_folder, f"{good}@2.5", monkeypatch)
    pickle = tmp_path / "adapter.ckpt"
    torch.save({"state_dict": {}}, pickle)
    assert "not a safetensors file" in refused(stability_folder, pickle, monkeypatch)
    assert "does not exist" in refused(stability_folder, tmp_path / "nowhere.safetensors", monkeypatch)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "adapter_model.safetensors").write_bytes(good.read_bytes())
    assert "is a folder" in refused(stability_folder, tmp_path / "folder", monkeypatch)
    odd = write_adapter(tmp_path / "odd.safetensors", random_adapter(pipe, "lora", 2, seed=3),
                        dict(rank=2, adapter_type="loha"))
    assert "'loha'" in refused(stability_folder, odd, monkeypatch)
    lora_only = write_adapter(tmp_path / "half.safetensors", random_adapter(pipe, "lora", 2, seed=3),
                              dict(rank=2, adapter_type="dora-rows"))
    assert "has no magnitude" in refused(stability_folder, lora_only, monkeypatch)


@pytest.mark.slow
def test_cli_lora_writes_the_adapted_clip(medium_like, tmp_path):
    import soundfile as sf

    from ..test_cli import one_error_line, run

    diffusers_folder, _, pipe = medium_like
    path = write_adapter(tmp_path / "a.safetensors", random_adapter(pipe, "dora-rows", 2, seed=6),
                         dict(rank=2, adapter_type="dora-rows"))
    args = ("generate", "calm piano", "-m", diffusers_folder, "-d", "0.25", "--steps", "2", "--seed", "1", "--quiet")
    base, adapted = tmp_path / "base.wav", tmp_path / "adapted.wav"
    for out, extra in ((base, ()), (adapted, ("--lora", f"{path}@0.5"))):
        proc = run(*args, *extra, "-o", out)
        assert proc.returncode == 0, proc.stderr
    a, b = sf.read(base)[0], sf.read(adapted)[0]
    assert a.shape == b.shape and np.abs(a - b).max() > 1e-3
    assert "from -2 to 2" in one_error_line(run(*args, "--lora", f"{path}@9", "-o", tmp_path / "x.wav"))
    assert not (tmp_path / "x.wav").exists()
