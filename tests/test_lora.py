"""tunesmith.lora on its own: specs, refusals before anything is read, and merge / revert."""

import json

import pytest
import torch
from safetensors.torch import save_file

from tunesmith.errors import InvalidParameter, TunesmithError
from tunesmith.lora import AdapterSpec, Target, fit, parse_specs, read_adapter
from tunesmith.lora_swap import AdapterSwap, peft_merger

from .lora_adapters import write_peft_folder, write_single_file


def lora_pair(out, width, rank, seed):
    g = torch.Generator().manual_seed(seed)
    return {"lora_A.weight": torch.randn(rank, width, generator=g), "lora_B.weight": torch.randn(out, rank, generator=g)}


def layers_of(name, out, width, rank=2, seed=0):
    return {f"{name}.{k}": v for k, v in lora_pair(out, width, rank, seed).items()}


def test_specs_parse_every_form(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "we@ird"
    a.touch()
    b.mkdir()
    assert parse_specs(None) == []
    assert parse_specs(str(a)) == [AdapterSpec(a, 1.0)]
    assert parse_specs([f"{a}@0.5", (b, -2), f"{b}"]) == [AdapterSpec(a, 0.5), AdapterSpec(b, -2.0),
                                                           AdapterSpec(b, 1.0)]  # "@ird" is no scale: the path's


@pytest.mark.parametrize("value, message", [
    ("{a}@3", r"a scale must be a number from -2 to 2, got 3\.0"),
    (("{a}", float("nan")), "a scale must be a number from -2 to 2, got nan"),
    ("{a}.missing@0.5", r"a\.safetensors\.missing does not exist"),
    (42, "must be a path"),
])
def test_bad_specs_are_one_line(tmp_path, value, message):
    a = tmp_path / "a.safetensors"
    a.touch()
    value = value.format(a=a) if isinstance(value, str) else (value[0].format(a=a), value[1]) \
        if isinstance(value, tuple) else value
    with pytest.raises(InvalidParameter, match=message):
        parse_specs(value)


def test_a_pickle_is_refused_unread(tmp_path, monkeypatch):
    """A torch.save file named .safetensors, or a PEFT folder with only adapter_model.bin: one line, and
    torch.load is never called."""
    pickled = tmp_path / "evil.safetensors"
    torch.save(layers_of("layers.0.q", 4, 4), pickled)
    folder = tmp_path / "peft"
    folder.mkdir()
    torch.save({}, folder / "adapter_model.bin")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    with pytest.raises(TunesmithError, match="is not a safetensors file"):
        read_adapter(AdapterSpec(pickled))
    with pytest.raises(TunesmithError, match="holds adapter_model.bin, a pickle: tunesmith reads adapters as "
                                             "safetensors only"):
        read_adapter(AdapterSpec(folder))
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(TunesmithError, match="is not a safetensors file"):
        read_adapter(AdapterSpec(tmp_path / "empty.safetensors"))


def test_alpha_from_config_patterns_and_tensors(tmp_path):
    layers = {**layers_of("layers.0.q", 4, 4, rank=2), **layers_of("layers.0.k", 4, 4, rank=2, seed=1)}
    folder = write_peft_folder(tmp_path / "peft", layers, 2, 4, ["q", "k"], alpha_pattern={"k": 1})
    adapter = read_adapter(AdapterSpec(folder))
    q, k = adapter.layers["base_model.model.layers.0.q"], adapter.layers["base_model.model.layers.0.k"]
    assert (q.alpha, q.scaling, k.alpha, k.scaling) == (4.0, 2.0, 1.0, 0.5)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "use_rslora": True}))
    assert read_adapter(AdapterSpec(folder)).layers["base_model.model.layers.0.q"].scaling == 4 / 2 ** 0.5
    single = write_single_file(tmp_path / "one.safetensors", layers, 6.0, prefix="")
    assert read_adapter(AdapterSpec(single)).layers["layers.0.k"].alpha == 6.0
    (folder / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(TunesmithError, match="is a DoRA adapter"):
        read_adapter(AdapterSpec(folder))


def test_half_a_layer_and_foreign_tensors_are_refused(tmp_path):
    pair = layers_of("layers.0.q", 4, 4)
    save_file({"layers.0.q.lora_A.weight": pair["layers.0.q.lora_A.weight"]}, str(tmp_path / "half.safetensors"))
    with pytest.raises(TunesmithError, match=r"layer layers\.0\.q has no lora_B \(up\) weight"):
        read_adapter(AdapterSpec(tmp_path / "half.safetensors"))
    save_file({**pair, "layers.0.q.weight": torch.zeros(4, 4)}, str(tmp_path / "full.safetensors"))
    with pytest.raises(TunesmithError, match=r"holds a tensor that is not LoRA: layers\.0\.q\.weight"):
        read_adapter(AdapterSpec(tmp_path / "full.safetensors"))


def test_merge_stacks_on_rows_and_reverts_bit_for_bit(tmp_path):
    """Two adapters on a fused q/k/v weight (q's layer on its first rows) in bfloat16: the merge is the sum of
    both updates rounded once; revert gives back the very bits."""
    torch.manual_seed(0)
    base = torch.randn(12, 4).to(torch.bfloat16)
    weights = {"qkv": torch.nn.Parameter(base.clone(), requires_grad=False)}
    a = write_single_file(tmp_path / "a.safetensors", layers_of("q", 4, 4, seed=1), 2.0, prefix="", dtype=torch.float32)
    b = write_single_file(tmp_path / "b.safetensors", layers_of("v", 4, 4, seed=2), 4.0, prefix="", dtype=torch.float32)
    adapters = [read_adapter(AdapterSpec(a, 0.5)), read_adapter(AdapterSpec(b, -1.0))]
    rows = {"q": (0, 4), "v": (8, 12)}
    swap = AdapterSwap(peft_merger(lambda name: Target("qkv", rows[name]), {"qkv": (12, 4)}, "the test model"),
                       weights=weights)
    swap.use([AdapterSpec(a, 0.5), AdapterSpec(b, -1.0)])
    expected = base.float()
    expected[0:4] += 0.5 * 1.0 * adapters[0].layers["q"].up @ adapters[0].layers["q"].down
    expected[8:12] += -1.0 * 2.0 * adapters[1].layers["v"].up @ adapters[1].layers["v"].down
    assert torch.equal(weights["qkv"].data, expected.to(torch.bfloat16))
    swap.use(None)
    assert torch.equal(weights["qkv"].data, base)


def test_fit_names_the_first_layer_that_does_not_fit(tmp_path):
    path = write_single_file(tmp_path / "a.safetensors", {**layers_of("q", 4, 4), **layers_of("k", 6, 4)}, 2.0,
                             prefix="")
    adapter = read_adapter(AdapterSpec(path))
    with pytest.raises(TunesmithError, match=r"layer k maps 4 -> 6 features, the model's 4 -> 4"):
        fit([adapter], lambda name: Target(name + ".weight"), {"q.weight": (4, 4), "k.weight": (4, 4)}, "it")
    with pytest.raises(TunesmithError, match="its layer k is none of the model's"):
        fit([adapter], lambda name: Target(name + ".weight") if name == "q" else None, {"q.weight": (4, 4)}, "it")


@pytest.mark.parametrize("lora, message", [
    ("{tmp}/missing@0.5", "missing does not exist"),
    ("{tmp}/a.safetensors@-2.5", "a scale must be a number from -2 to 2"),
    ("{tmp}/pickled.pt", "is not a safetensors file"),
])
def test_load_refuses_a_bad_adapter_before_any_download(tmp_path, monkeypatch, lora, message):
    import tunesmith

    (tmp_path / "a.safetensors").touch()
    torch.save({"w": torch.zeros(2)}, tmp_path / "pickled.pt")
    monkeypatch.setattr("tunesmith.hub.resolve", lambda *a, **k: pytest.fail("the model was looked up"))
    with pytest.raises(TunesmithError, match=message):
        tunesmith.load("acestep", lora=lora.format(tmp=tmp_path))


def test_kohya_and_peft_adapter_name_forms_read_alike(tmp_path):
    """lora_down/lora_up with .alpha (kohya, ComfyUI) and peft's lora_A.<adapter>.weight: the same layer."""
    pair = lora_pair(4, 4, 2, seed=5)
    save_file({"q.lora_down.weight": pair["lora_A.weight"], "q.lora_up.weight": pair["lora_B.weight"],
               "q.alpha": torch.tensor(3.0)}, str(tmp_path / "kohya.safetensors"))
    save_file({"q.lora_A.default.weight": pair["lora_A.weight"], "q.lora_B.default.weight": pair["lora_B.weight"],
               "q.alpha": torch.tensor(3.0)}, str(tmp_path / "named.safetensors"))
    kohya = read_adapter(AdapterSpec(tmp_path / "kohya.safetensors")).layers["q"]
    named = read_adapter(AdapterSpec(tmp_path / "named.safetensors")).layers["q"]
    assert torch.equal(kohya.delta(0.5), named.delta(0.5)) and kohya.scaling == 1.5
    assert torch.allclose(kohya.delta(0.5), 0.75 * pair["lora_B.weight"] @ pair["lora_A.weight"])
