"""MusicGen adapter sets swapped on a loaded model (use_lora, the server's per-job adapters): each set gives the
audio of a model loaded with it merged, and the weights after a revert are the base model's bit for bit, on the
live form (plain linears) and the derived ones (packed float32, int8 and int4 from the kept float32 base)."""

import numpy as np
import pytest
import torch

from tunesmith import MusicGen
from tunesmith.musicgen.linear import DynamicInt8Linear

from ..lora_adapters import peft_layers, write_peft_folder, write_single_file

TARGETS = ["q_proj", "v_proj", "out_proj", "fc1", "lm_heads.1", "enc_to_dec_proj"]
OTHER = ["k_proj", "fc2", "lm_heads.0"]


@pytest.fixture(scope="module")
def two(mono_ckpt, tmp_path_factory):
    """Adapters A (a PEFT folder) and B (a single file on other layers)."""
    root = tmp_path_factory.mktemp("mg-swap")
    a = write_peft_folder(root / "a", peft_layers(mono_ckpt[1], TARGETS, 4, 8, seed=1, size=0.3), 4, 8, TARGETS)
    b = write_single_file(root / "b.safetensors", peft_layers(mono_ckpt[1], OTHER, 2, 2, seed=2, size=0.5), 2.0,
                          dtype=torch.float32)
    return a, b


FORMS = [("float32", None), ("float32", "int8"), ("float32", "int4"), ("plain", None)]


@pytest.fixture(params=FORMS, ids=["float32", "int8", "int4", "plain"])
def form(request, monkeypatch):
    dtype, quantize = request.param
    if dtype == "plain":  # the live form: step linears left as nn.Linear (what a GPU runs)
        monkeypatch.setattr("tunesmith.musicgen.linear.specialiser", lambda *a: None)
        dtype = "float32"
    if quantize == "int4" and not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        pytest.skip("this torch has no int4 CPU kernel")
    from tunesmith.musicgen.linear import cpu_packing_available

    derived = quantize is not None or (request.param[0] == "float32" and cpu_packing_available(torch.float32))
    return dict(device="cpu", dtype=dtype, quantize=quantize), derived


def audio(model):
    clip, = model.generate("jazz", duration=0.4, seed=4, temperature=0)
    return clip


def state(model) -> dict:
    """The LM's weights, packed and quantized ones included (its KV cache is no weight)."""
    lm = model._model.lm
    found = {k: (v.to_dense() if v.is_mkldnn else v).clone()  # oneDNN-packed: compared as its values
             for k, v in [*lm.named_parameters(), *lm.named_buffers()] if ".cache." not in k}
    # fbgemm's int8 (CPUs below AVX-512) packs its weight outside any tensor: compared as its int8 values
    return found | {f"{k}.product": m.product.int8_weight() for k, m in lm.named_modules()
                    if isinstance(m, DynamicInt8Linear)}


def test_each_set_is_the_model_loaded_with_it(mono_ckpt, two, form):
    a, b = two
    form, derived = form
    model = MusicGen.from_pretrained(mono_ckpt[0], swap_lora=True, **form)
    assert model._swap.derived == derived
    base_state = state(model)
    for lora in [(a, 0.8), None, [f"{b}@-1.2", (a, 0.5)], (a, 0.8)]:
        model.use_lora(lora)
        got = audio(model)
        loaded = MusicGen.from_pretrained(mono_ckpt[0], lora=lora, **form)
        want = audio(loaded)
        np.testing.assert_array_equal(got.audio, want.audio)
        # the same kinds of linears as a load-time merge (packed, int8, ...): each step costs what it costs there
        assert [type(m) for m in model._model.lm.modules()] == [type(m) for m in loaded._model.lm.modules()]
        assert got.params.get("lora") == want.params.get("lora")
    model.use_lora([])
    after = state(model)
    assert after.keys() == base_state.keys()
    assert all(torch.equal(after[k], base_state[k]) for k in base_state)  # bit-identical after the revert
    assert not np.array_equal(audio(model).audio, audio(MusicGen.from_pretrained(mono_ckpt[0], lora=a, **form)).audio)


def test_the_same_set_is_not_merged_again(mono_ckpt, two):
    a, _ = two
    model = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32", swap_lora=True, lora=(a, 0.5))
    assert model._swap.merges == 1
    assert model.use_lora(f"{a}@0.5") is False and model._swap.merges == 1
    assert model.use_lora((a, 0.6)) is True and model._swap.merges == 2


def test_a_refused_set_leaves_the_running_one(mono_ckpt, two, tmp_path):
    from tunesmith.errors import TunesmithError

    a, _ = two
    model = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32", swap_lora=True, lora=a)
    before = state(model)
    wrong = write_single_file(tmp_path / "wrong.safetensors",
                              {"layers.0.self_attn.to_q.lora_A.weight": torch.zeros(2, 16),
                               "layers.0.self_attn.to_q.lora_B.weight": torch.zeros(16, 2)}, 2.0, prefix="")
    with pytest.raises(TunesmithError, match="does not fit this MusicGen decoder"):
        model.use_lora([a, wrong])
    assert model.lora[0].path == a and all(torch.equal(v, before[k]) for k, v in state(model).items())


def test_use_lora_needs_swap_lora(mono_ckpt, two):
    from tunesmith.errors import InvalidParameter

    model = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32")
    with pytest.raises(InvalidParameter, match="swap_lora=True"):
        model.use_lora(two[0])


def test_an_adapter_file_replaced_in_place_is_merged_again(mono_ckpt, two, tmp_path):
    import os
    import shutil

    a, b = two
    path = tmp_path / "style.safetensors"
    shutil.copy(b, path)
    model = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32", swap_lora=True, lora=path)
    first = audio(model).audio
    write_single_file(path, peft_layers(mono_ckpt[1], OTHER, 2, 2, seed=7, size=0.5), 2.0, dtype=torch.float32)
    os.utime(path, ns=(1, 1))  # another stamp, whatever the clock's resolution
    assert model.use_lora(path) is True
    assert not np.array_equal(audio(model).audio, first)
    np.testing.assert_array_equal(audio(model).audio, audio(MusicGen.from_pretrained(
        mono_ckpt[0], device="cpu", dtype="float32", lora=path)).audio)
