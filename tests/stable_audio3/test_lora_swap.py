"""Stable Audio 3 adapter sets swapped on a loaded model (use_lora, the server's per-job adapters): A, none, a
DoRA stacked before A, A again; each set gives the audio of a model loaded with it merged, bit for bit, on
diffusers' float32 path (live weights) and the CPU's bfloat16 and int8 DiT (blocks made again from the kept
float32 DiT), and the weights after a swap back to none are the base's bit for bit. In half precision (a GPU's
form, here bfloat16 on the CPU through diffusers' modules) each set's weights are a load-time merge's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tunesmith
from tunesmith.errors import TunesmithError

from .lora_reference import random_adapter, stability_layers, with_adapters, write_adapter
from .tiny import save_tiny_pipeline

DURATION = 0.25
A_LAYERS = ("layers.0.", "project_in", "to_timestep_embed", "seconds_total")  # substrings of Stability's names
B_LAYERS = ("layers.1.", "layers.0.self_attn.to_qkv", "preprocess_conv", "to_global_embed")


@pytest.fixture(scope="module")
def medium_like(tmp_path_factory):
    """(folder, pipeline): differential attention (Medium's row order crossed), Euler steps."""
    root = tmp_path_factory.mktemp("sa3-swap")
    pipe = save_tiny_pipeline(root / "diffusers", seed=5, differential=True, post_trained=False)
    return root / "diffusers", pipe


@pytest.fixture(scope="module")
def sets(medium_like, tmp_path_factory):
    """A: a LoRA on block 0, proj_in, the time embedder and the duration embedder; B: a DoRA (rows) on block 1,
    block 0's q/k/v (shared with A), the 1x1 input conv and the global embedder. -> (A, B, their tensors)."""
    _, pipe = medium_like
    root = tmp_path_factory.mktemp("sa3-swap-adapters")
    names = list(stability_layers(pipe))
    a_names = [n for n in names if any(s in n for s in A_LAYERS)]
    b_names = [n for n in names if any(s in n for s in B_LAYERS)]
    a = random_adapter(pipe, "lora", rank=2, seed=1, names=a_names)
    b = random_adapter(pipe, "dora-rows", rank=2, seed=2, size=0.5, names=b_names)
    a_config, b_config = dict(rank=2, alpha=4.0, adapter_type="lora"), dict(rank=2, adapter_type="dora-rows")
    return (write_adapter(root / "style.safetensors", a, a_config),
            write_adapter(root / "detail.safetensors", b, b_config), (a, a_config, b, b_config))


def generated(model) -> np.ndarray:
    clip, = model.generate("calm piano", duration=DURATION, seed=2, steps=3)
    return clip.audio


def products(linear) -> dict[str, torch.Tensor]:
    """What one of cpu.py's products computes with: bfloat16 weights, int8 rows and scales, or fbgemm's
    packed int8 (unpacked to its integers and scales)."""
    if hasattr(linear, "packed"):
        weight, bias = torch.ops.quantized.linear_unpack(linear.packed)
        found = {"int8": weight.int_repr(), "scale": weight.q_per_channel_scales()}
        return found if bias is None else {**found, "bias": bias}
    return {k: getattr(linear, k) for k in ("weight", "weight_t", "scale", "bias")
            if getattr(linear, k, None) is not None}


def state(model) -> dict[str, torch.Tensor]:
    """Every weight the model computes with: diffusers' parameters, or the CPU DiT's float32 modules and each
    block's products, embeddings and modulation; and the duration embedder's."""
    parts = model._parts
    dit = parts.transformer
    found = {"seconds." + k: v for k, v in parts.seconds.state_dict().items()}
    found.update({"dit." + k: v for k, v in dit.state_dict().items()})  # the CPU DiT: its float32 modules
    for i, block in enumerate(getattr(dit, "blocks", [])):
        for name in ("qkv", "out1", "q_cross", "kv_cross", "out2", "ff_in", "ff_out"):
            found.update({f"{i}.{name}.{k}": v for k, v in products(getattr(block, name)).items()})
        found.update({f"{i}.local.{k}": v for k, v in block.local.state_dict().items()})
        found[f"{i}.modulation"] = block.modulation
    return {k: v.detach().clone() for k, v in found.items()}


def assert_same(mine: dict, theirs: dict):
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name


FORMS = {"float32": dict(dtype="float32"), "bfloat16": dict(dtype="bfloat16"),
         "int8": dict(dtype="float32", quantize="int8")}


@pytest.mark.parametrize("form", list(FORMS))
def test_each_set_is_the_model_loaded_with_it(medium_like, sets, form):
    folder, _ = medium_like
    a, b, _ = sets
    options = dict(device="cpu", **FORMS[form])
    model = tunesmith.load(folder, swap_lora=True, **options)
    assert model._swap.derived == (form != "float32")
    base = state(model)
    made = {}
    for lora in [[(a, 0.8)], [], [(b, -0.6), (a, 0.8)], [(a, 0.8)]]:
        model.use_lora(lora)
        key = tuple(lora)
        if key not in made:  # a load-time merge of the same set on the same form
            loaded = tunesmith.load(folder, lora=lora, **options)
            made[key] = generated(loaded), state(loaded)
        audio, weights = made[key]
        assert_same(state(model), weights)
        np.testing.assert_array_equal(generated(model), audio)
        assert [(s.path, s.scale) for s in model.lora] == lora
    assert model._swap.merges == 3  # none is no merge
    assert np.abs(made[((a, 0.8),)][0] - made[()][0]).max() > 1e-3  # the sets move the audio
    assert np.abs(made[((b, -0.6), (a, 0.8))][0] - made[((a, 0.8),)][0]).max() > 1e-3
    model.use_lora(None)
    assert_same(state(model), base)


def test_the_float32_swap_is_stabilitys_stacked_parametrizations(medium_like, sets):
    """The swapped-in stack (DoRA, then LoRA) against the reference written from Stability's definitions."""
    folder, pipe = medium_like
    a, b, (a_tensors, a_config, b_tensors, b_config) = sets
    model = tunesmith.load(folder, device="cpu", dtype="float32", swap_lora=True, lora=(a, 0.3))
    model.use_lora([(b, -0.6), (a, 0.8)])
    reference = with_adapters(pipe, [("dora-rows", b_tensors, b_config, -0.6), ("lora", a_tensors, a_config, 0.8)])
    expected = reference("calm piano", generator=torch.Generator("cpu").manual_seed(2), duration=DURATION,
                         num_inference_steps=3).audios[0].numpy()
    assert np.abs(generated(model) - expected).max() < 1e-4


def test_a_refused_set_leaves_the_running_one(medium_like, sets, tmp_path):
    folder, pipe = medium_like
    a, _, _ = sets
    model = tunesmith.load(folder, device="cpu", dtype="bfloat16", swap_lora=True, lora=(a, 0.8))
    before = state(model)
    wide = random_adapter(pipe, "lora", rank=2, seed=3)
    wide = {k: torch.cat([v, v], dim=1) if k.endswith("lora_A") else v for k, v in wide.items()}
    path = write_adapter(tmp_path / "wide.safetensors", wide, dict(rank=2))
    with pytest.raises(TunesmithError, match="does not fit this Stable Audio 3 model") as err:
        model.use_lora([(a, 0.8), (path, 1.0)])
    assert "\n" not in str(err.value)
    assert [(s.path, s.scale) for s in model.lora] == [(a, 0.8)]
    assert_same(state(model), before)
    assert not model.use_lora((a, 0.8))  # the same set: nothing merged again


def test_half_precision_sets_are_load_time_merges(medium_like, sets):
    """A GPU's form (the DiT in half precision through diffusers' modules; bfloat16 on the CPU here): each set
    merged in float32 from the kept base and rounded once, as load(lora=...) merges before its cast."""
    from tunesmith.lora import parse_specs
    from tunesmith.stable_audio3.adapters import checkpoint_sites, fit, merge, read_adapters
    from tunesmith.stable_audio3.load import load_folder
    from tunesmith.stable_audio3.model import StableAudio3

    folder, _ = medium_like
    a, b, _ = sets
    cpu, half = torch.device("cpu"), torch.bfloat16
    sites = checkpoint_sites(folder)
    model = StableAudio3._swappable(load_folder(folder, cpu, torch.float32), sites, "tiny", cpu, half, None, False)
    assert model._swap.derived and model._parts.transformer.proj_in.weight.dtype == half
    base = state(model)
    for lora in [[(b, -0.6), (a, 0.8)], [(a, 0.8)]]:
        model.use_lora(lora)
        parts = load_folder(folder, cpu, torch.float32)
        merge(parts, fit(read_adapters(parse_specs(lora)), sites, "tiny"))
        assert_same(state(model), state(StableAudio3(parts.to(cpu, half), "tiny", cpu, half)))
    model.use_lora(None)
    assert_same(state(model), base)


# ---- Stability's LoRA interval: adapters that act at some noise levels only ----------------------------------


def gated(pipe, intervals: list[tuple[float, float]]):
    """Stability's DiffusionTransformer.forward on the reference: before each DiT call, adapter i's DiT layers act
    iff intervals[i][0] <= sigma <= intervals[i][1] (sigma: the call's noise level, the time step over the
    scheduler's num_train_timesteps), the others are the identity (disable_lora); the conditioners' adapters are
    never gated."""
    from .lora_reference import StabilityAdapter

    dit, scale = pipe.transformer, pipe.scheduler.config.num_train_timesteps
    forward = dit.forward

    def gated_forward(hidden_states, timestep, *args, **kwargs):
        sigma = timestep[0] / scale
        for module in dit.modules():
            if isinstance(module, StabilityAdapter):
                low, high = intervals[module.index]
                module.enabled = bool(low <= sigma <= high)
        return forward(hidden_states, timestep, *args, **kwargs)

    dit.forward = gated_forward
    return pipe


@pytest.mark.parametrize("form", list(FORMS))
def test_an_interval_swaps_adapters_at_step_boundaries_as_stability_gates_them(medium_like, sets, form):
    """B (a DoRA) acts at the first two steps, A at the last two (A's duration-embedder layer at every step, as
    Stability's conditioner is never gated): three stacks in three steps. float32 against the reference written
    from Stability's definitions; every form swaps back to its base bit for bit."""
    from tunesmith.stable_audio3.sample import noise_levels

    folder, pipe = medium_like
    a, b, (a_tensors, a_config, b_tensors, b_config) = sets
    plain = tunesmith.load(folder, device="cpu", swap_lora=True, **FORMS[form])
    base = state(plain)
    l0, l1, l2, _ = noise_levels(plain._parts, 3).tolist()
    intervals = [((l1 + l2) / 2, 1.0), (0.0, (l0 + l1) / 2)]  # bounds between the steps' levels
    lora = [(b, -0.6, intervals[0]), (a, 0.8, intervals[1])]
    model = tunesmith.load(folder, device="cpu", lora=lora, **FORMS[form])
    clip, = model.generate("calm piano", duration=DURATION, seed=2, steps=3)
    assert model._swap.merges == 4  # the whole set at load (and for the conditioners), then B, B+A, A by step
    assert clip.params["lora"] == [[str(b), -0.6, list(intervals[0])], [str(a), 0.8, list(intervals[1])]]
    model.use_lora(None)
    assert_same(state(model), base)
    if form != "float32":
        return
    reference = gated(with_adapters(pipe, [("dora-rows", b_tensors, b_config, -0.6),
                                           ("lora", a_tensors, a_config, 0.8)]), intervals)
    expected = reference("calm piano", generator=torch.Generator("cpu").manual_seed(2), duration=DURATION,
                         num_inference_steps=3).audios[0].numpy()
    assert np.abs(clip.audio - expected).max() < 1e-4
    always, = tunesmith.load(folder, device="cpu", lora=[(b, -0.6), (a, 0.8)], **FORMS[form]).generate(
        "calm piano", duration=DURATION, seed=2, steps=3)
    assert np.abs(always.audio - expected).max() > 1e-3  # the interval moves the audio


def test_bad_intervals_are_one_line(medium_like, sets):
    from tunesmith.errors import InvalidParameter
    from tunesmith.lora import AdapterSpec, read_adapter

    folder, _ = medium_like
    a, _, _ = sets
    for interval in [(0.6, 0.2), (-0.1, 0.5), (0.0, 1.5), "0:1", (0.1,)]:
        with pytest.raises(InvalidParameter, match="a noise-level interval must be") as err:
            tunesmith.load(folder, device="cpu", dtype="float32", lora=[(a, 1.0, interval)])
        assert "\n" not in str(err.value)
    with pytest.raises(InvalidParameter, match="a noise-level interval is for Stable Audio 3's adapters"):
        read_adapter(AdapterSpec(a, 1.0, (0.0, 0.5)))  # MusicGen's and ACE-Step's reader
