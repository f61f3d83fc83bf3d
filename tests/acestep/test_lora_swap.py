"""ACE-Step adapter sets swapped on a loaded model (use_lora): each set gives the song of a model loaded with it
merged, on diffusers' float32 path (live weights) and the CPU's bfloat16 and int8 DiT (blocks rebuilt from the
kept float32 DiT), and the base weights come back bit for bit."""

import numpy as np
import pytest
import torch

import tunesmith

from .test_lora import RANK, adapters, generate  # noqa: F401 (the adapters fixture)


def weights(model) -> dict:
    """What the DiT computes with: diffusers' parameters, or the CPU blocks' product weights."""
    dit = model._parts.transformer
    if isinstance(dit, torch.nn.Module) and not hasattr(dit, "blocks"):
        return {k: v.detach().clone() for k, v in dit.named_parameters()}
    found = {}
    for i, block in enumerate(dit.blocks):
        for name in ("qkv", "out1", "q2", "kv2", "out2", "gate_up", "down"):
            linear = getattr(block, name)
            for part in ("weight", "weight_t", "scale"):
                if hasattr(linear, part):
                    found[f"{i}.{name}.{part}"] = getattr(linear, part).clone()
    return found


@pytest.mark.parametrize("dtype, quantize", [("float32", None), ("bfloat16", None), ("float32", "int8")])
def test_each_set_is_the_model_loaded_with_it(ace_ckpt, adapters, dtype, quantize):  # noqa: F811
    form = dict(device="cpu", dtype=dtype, quantize=quantize)
    a, b = adapters[2 * RANK], adapters[RANK]
    model = tunesmith.load(ace_ckpt[0], swap_lora=True, **form)
    assert model._swap.derived == (dtype == "bfloat16" or quantize is not None)
    base = weights(model)
    for lora in [(a, 0.7), None, [(b, -1.0), f"{a}@0.4"]]:
        model.use_lora(lora)
        want = generate(tunesmith.load(ace_ckpt[0], lora=lora, **form)).audio
        np.testing.assert_array_equal(generate(model).audio, want)
    model.use_lora(None)
    after = weights(model)
    assert after.keys() == base.keys() and all(torch.equal(after[k], base[k]) for k in base)


def test_its_fitting_checks_an_adapter_from_its_header_as_a_server_does_at_submit(ace_ckpt, adapters,  # noqa: F811
                                                                                tmp_path):
    """lora_fitting(): the shapes and the family's locator a server records at load (JSON, for a cluster's
    ingress); check_fit with them takes the trainer's adapters and refuses one of another size naming the layer,
    as fit does when the adapter's tensors are read."""
    import json

    from safetensors.torch import save_file

    from tunesmith.errors import TunesmithError
    from tunesmith.family import FAMILIES
    from tunesmith.lora import Fitting, check_fit, fit, parse_specs, read_adapters

    model = tunesmith.load(ace_ckpt[0], device="cpu", dtype="bfloat16", swap_lora=True)
    fitting = Fitting.from_json(json.loads(json.dumps(model.lora_fitting().as_json())))
    assert fitting == model.lora_fitting() and fitting.family == "acestep"
    locate = FAMILIES["acestep"].adapter_locator(fitting.arguments)
    for adapter in adapters.values():
        check_fit("lora 'style'", adapter, locate, fitting.shapes, "tiny")
    width = fitting.shapes["layers.0.self_attn.to_q.weight"][1]
    wrong = tmp_path / "wider.safetensors"
    save_file({"base_model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, width + 1),
               "base_model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(width, 2)}, str(wrong))
    with pytest.raises(TunesmithError) as at_submit:
        check_fit("lora 'wider'", wrong, locate, fitting.shapes, "tiny")
    assert str(at_submit.value) == (f"lora 'wider' does not fit tiny: layer base_model.model.layers.0.self_attn.q_proj "
                                    f"maps {width + 1} -> {width} features, the model's {width} -> {width} (an adapter "
                                    "for another size or family)")
    with pytest.raises(TunesmithError) as at_run:
        fit(read_adapters(parse_specs(wrong)), locate, fitting.shapes, "tiny")
    assert str(at_run.value) == str(at_submit.value).replace("lora 'wider'", f"LoRA {wrong}")
