"""Checkpoint layouts that load, and damaged ones that are refused with a clear error."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tunesmith import MusicGen
from tunesmith.errors import CheckpointError
from tunesmith.musicgen import weights

from ..checkpoints import save_checkpoint


def _greedy(folder):
    mg = MusicGen.from_pretrained(folder, device="cpu", dtype="float32")
    return mg.generate("calm lofi piano", duration=0.3, temperature=0)[0].audio


@pytest.fixture(scope="module")
def reference_audio(mono_ckpt):
    return _greedy(mono_ckpt[0])


@pytest.mark.parametrize("layout", [dict(safe=False), dict(shard="20KB"), dict(safe=False, shard="20KB")])
def test_bin_and_sharded_checkpoints_load_the_same_weights(tmp_path, layout, reference_audio):
    save_checkpoint(tmp_path, **layout)  # same seed as the mono fixture
    names = sorted(p.name for p in tmp_path.iterdir())
    if not layout.get("safe", True):
        assert not any(n.endswith(".safetensors") for n in names)
    if "shard" in layout:
        assert any(n.endswith(".index.json") for n in names)
    np.testing.assert_array_equal(_greedy(tmp_path), reference_audio)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_legacy_weight_norm_names_load(tmp_path, mono_ckpt, reference_audio):
    folder = _copy(mono_ckpt[0], tmp_path / "legacy")
    state = load_file(str(folder / "model.safetensors"))
    renamed = {k.replace("parametrizations.weight.original0", "weight_g")
                .replace("parametrizations.weight.original1", "weight_v"): v for k, v in state.items()}
    assert renamed.keys() != state.keys()
    save_file(renamed, str(folder / "model.safetensors"))
    np.testing.assert_array_equal(_greedy(folder), reference_audio)


def _edit(folder, change):
    state = load_file(str(folder / "model.safetensors"))
    change(state)
    save_file(state, str(folder / "model.safetensors"))


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("decoder.model.decoder.layers.1.fc1.weight"), "lacks decoder.model.decoder.layers.1.fc1"),
    (lambda s: s.pop("text_encoder.encoder.final_layer_norm.weight"), "lacks text_encoder.encoder.final_layer_norm"),
    (lambda s: s.pop("audio_encoder.quantizer.layers.0.codebook.embed"), "lacks audio_encoder.quantizer"),
    (lambda s: s.update({"decoder.extra.weight": torch.zeros(2)}), "unexpected tensor in checkpoint: decoder.extra"),
    (lambda s: s.update({"audio_encoder.extra": torch.zeros(2)}), "unexpected audio codec tensor"),
    (lambda s: s.update({"decoder.lm_heads.0.weight": torch.zeros(3, 32)}), "has shape (3, 32)"),
])
def test_missing_unexpected_or_misshapen_tensors_are_errors(tmp_path, mono_ckpt, change, message):
    folder = _copy(mono_ckpt[0], tmp_path / "bad")
    _edit(folder, change)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MusicGen.from_pretrained(folder, device="cpu")


def test_truncated_file_is_reported(tmp_path, mono_ckpt):
    folder = _copy(mono_ckpt[0], tmp_path / "cut")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged or incomplete"):
        MusicGen.from_pretrained(folder, device="cpu")


def test_unreadable_weights_say_permission_denied(tmp_path, mono_ckpt, monkeypatch):
    """chmod 000, faked (root reads anything): the path and the OS's reason, not 'download it again'."""
    folder = _copy(mono_ckpt[0], tmp_path / "locked")
    real_open = open

    def refuse(path, *args, **kwargs):
        if str(path).endswith(".safetensors"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(weights, "open", refuse, raising=False)
    with pytest.raises(CheckpointError) as err:
        MusicGen.from_pretrained(folder, device="cpu")
    assert str(err.value) == f"cannot read {folder / 'model.safetensors'}: permission denied"


@pytest.mark.parametrize("name, how, reason", [("model.safetensors", "folder", "is a directory"),
                                               ("model.safetensors", "broken link", "no such file or directory"),
                                               ("config.json", "folder", "is a directory")])
def test_files_that_cannot_be_read_say_why(tmp_path, mono_ckpt, name, how, reason):
    folder = _copy(mono_ckpt[0], tmp_path / "odd")
    (folder / name).unlink()
    if how == "folder":
        (folder / name).mkdir()
    else:
        (folder / name).symlink_to(tmp_path / "gone")
    with pytest.raises(CheckpointError) as err:
        MusicGen.from_pretrained(folder, device="cpu")
    assert str(err.value) == f"cannot read {folder / name}: {reason}"


def test_missing_shard_is_reported(tmp_path):
    save_checkpoint(tmp_path, shard="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    (tmp_path / victim).unlink()
    with pytest.raises(CheckpointError, match=f"incomplete: missing {victim}"):
        MusicGen.from_pretrained(tmp_path, device="cpu")


@pytest.mark.parametrize("remove, message", [("model.safetensors", "no model.safetensors or pytorch_model.bin"),
                                             ("tokenizer.json", "no tokenizer"),
                                             ("config.json", "no config.json")])
def test_missing_files_are_reported(tmp_path, mono_ckpt, remove, message):
    folder = _copy(mono_ckpt[0], tmp_path / "partial")
    (folder / remove).unlink()
    with pytest.raises(CheckpointError, match=message):
        MusicGen.from_pretrained(folder, device="cpu")


def test_other_model_types_are_refused(tmp_path, mono_ckpt):
    folder = _copy(mono_ckpt[0], tmp_path / "other")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "bert"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="not a MusicGen checkpoint"):
        MusicGen.from_pretrained(folder, device="cpu")


def test_text_states_without_projection(tmp_path):
    """T5 width equal to the decoder width: the checkpoint has no enc_to_dec_proj."""
    ref = save_checkpoint(tmp_path, proj=False)
    assert not hasattr(ref, "enc_to_dec_proj")
    mg = MusicGen.from_pretrained(tmp_path, device="cpu", dtype="float32")
    tokens = mg._model.text.tokenizer(["calm lofi piano"], return_tensors="pt")
    with torch.no_grad():
        expected = ref.generate(**tokens, do_sample=False, guidance_scale=3.0, max_new_tokens=15 + 3)
    clip, = mg.generate("calm lofi piano", duration=0.3, temperature=0)
    np.testing.assert_allclose(clip.audio, expected[0].numpy(), atol=1e-4, rtol=0)
