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
