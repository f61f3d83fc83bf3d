"""ACE-Step's CPU DiT (acestep/cpu.py) computes diffusers' AceStepTransformer1DModel: to float32 rounding
in float32, within an SNR floor in bfloat16 and int8 (BENCHMARKS.md has the real sizes' figures)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tunesmith
from tunesmith.errors import InvalidParameter
from tunesmith.acestep.cpu import DiTCPU, prepare_dit
from tunesmith.diffusion import ops

from .tiny import LATENT_DIM


def snr_db(reference: torch.Tensor, x: torch.Tensor) -> float:
    reference, x = torch.as_tensor(reference).double(), torch.as_tensor(x).double()
    return 10 * torch.log10(reference.pow(2).sum() / (reference - x).pow(2).sum()).item()


def kernel_dit(seed: int = 0, **sizes):
    """Heads of 16 (the attention kernel's smallest; the tiny pipeline's are 8, torch's path), 4 layers
    (sliding, full, sliding, full), a window of 5 patches: most keys fall outside it. sizes: other
    AceStepTransformer1DModel sizes."""
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel

    torch.manual_seed(seed)
    return AceStepTransformer1DModel(**{
        **dict(hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
               head_dim=16, in_channels=3 * LATENT_DIM, audio_acoustic_hidden_dim=LATENT_DIM, patch_size=2,
               rope_theta=10000.0, sliding_window=5), **sizes}).eval()


# The XL DiT's shape (acestep-v15-xl-*: width 2560, 32 heads of 128 on 8 key/value heads, condition states of
# 2048 projected to 2560): heads wider than the stream, 4 query heads a key/value head, narrower conditions.
XL_SHAPE = dict(num_attention_heads=8, num_key_value_heads=2, encoder_hidden_size=48)


def inputs(dit, frames: int, batch: int = 2, seed: int = 0) -> dict:
    """A guidance batch: two rows of other condition states (as the conditioned and null rows),
    other timesteps; timestep_r = timestep as the pipeline passes it."""
    gen = torch.Generator().manual_seed(seed)
    width = dit.config.encoder_hidden_size or dit.config.hidden_size
    t = torch.rand(batch, generator=gen)
    return dict(hidden_states=torch.randn(batch, frames, LATENT_DIM, generator=gen),
                timestep=t, timestep_r=t,
                encoder_hidden_states=torch.randn(batch, 13, width, generator=gen),
                context_latents=torch.randn(batch, frames, 2 * LATENT_DIM, generator=gen))


@pytest.fixture(params=["tiny-pipeline", "kernel-heads", "xl-shape"])
def dit(request, ace_ckpt):
    if request.param == "tiny-pipeline":
        return ace_ckpt[1].transformer
    return kernel_dit(**(XL_SHAPE if request.param == "xl-shape" else {}))


@pytest.mark.parametrize("frames", [7, 40, 301])
@torch.inference_mode()
def test_float32_equals_diffusers(dit, frames):
    """Odd lengths (padded to whole patches, cut back), sliding windows shorter and longer than the
    sequence, a batch of two conditions."""
    x = inputs(dit, frames)
    reference = dit(**x).sample
    fast = prepare_dit(dit, torch.float32)
    out = fast(**x)
    assert out.sample.shape == reference.shape == (2, frames, LATENT_DIM) and out.sample.dtype == torch.float32
    assert torch.allclose(out.sample, reference, rtol=1e-5, atol=1e-5)
    (again,) = fast(**x, return_dict=False)  # the cross-attention keys and values of last time
    assert torch.equal(again, out.sample)


@pytest.mark.parametrize("quantize, floor", [(None, 40), ("int8", 33)])
@torch.inference_mode()
def test_reduced_precision_within_snr(dit, quantize, floor):
    """bfloat16 products around the float32 stream: 54-57 dB here; int8 about 50 (diffusers cast to
    bfloat16 reaches about 38 here)."""
    x = inputs(dit, 301)
    reference = dit(**x).sample
    assert snr_db(reference, prepare_dit(dit, torch.bfloat16, quantize)(**x).sample) > floor


@torch.inference_mode()
def test_cross_attention_is_computed_again_for_other_conditions():
    dit = kernel_dit()
    fast = prepare_dit(dit, torch.float32)
    x = inputs(dit, 40)
    fast(**x)
    kept = fast._context_of[1]
    x["encoder_hidden_states"] = x["encoder_hidden_states"].clone()  # equal values, another tensor
    fast(**x)
    assert fast._context_of[1] is kept
    x["encoder_hidden_states"][1, 3, 2] += 1  # changed in place: computed again
    assert torch.allclose(fast(**x).sample, dit(**x).sample, rtol=1e-5, atol=1e-5)
    assert fast._context_of[1] is not kept


def test_the_prepared_dit_keeps_its_dtypes_and_the_cpu():
    dit = kernel_dit()
    fast = prepare_dit(dit, torch.bfloat16)
    assert fast.to("cpu", torch.bfloat16) is fast and fast.dtype == torch.float32 and fast.device.type == "cpu"
    assert fast.blocks[0].qkv.weight.dtype == torch.bfloat16 and fast.proj_in_conv.weight.dtype == torch.float32
    assert [b.window for b in fast.blocks] == [5, None, 5, None]  # diffusers' layer types: sliding first
    with pytest.raises(ValueError, match="CPU only"):
        fast.to("meta")
    with pytest.raises(ValueError, match="quantize"):
        prepare_dit(dit, torch.bfloat16, "int4")
    with pytest.raises(ValueError, match="attention_kwargs"):
        fast(**inputs(dit, 8), attention_kwargs={"scale": 0.5})
    assert len(dit.layers) == 4 and not isinstance(dit.layers[0], torch.nn.Identity)  # left whole
    prepare_dit(dit, torch.bfloat16, consume=True)
    assert all(isinstance(layer, torch.nn.Identity) for layer in dit.layers)


@torch.inference_mode()
def test_without_the_kernels_torch_computes_the_same(monkeypatch):
    dit = kernel_dit()
    x = inputs(dit, 301)
    with_kernels = prepare_dit(dit, torch.bfloat16)(**x).sample
    monkeypatch.setattr(ops, "kernels", lambda: None)
    without = prepare_dit(dit, torch.bfloat16)(**x).sample
    assert snr_db(with_kernels, without) > 40


@pytest.mark.parametrize("quantize, floor", [(None, 30), ("int8", 20)])
def test_the_cpu_path_generates_songs_close_to_float32(ace_ckpt, ace_model, quantize, floor):
    """tunesmith.load(..., dtype="bfloat16", quantize=...) end to end: the CPU DiT, the tiled decoder."""
    from .test_model import LYRICS

    fast = tunesmith.load(ace_ckpt[0], device="cpu", dtype="bfloat16", quantize=quantize)
    assert isinstance(fast._parts.transformer, DiTCPU) and fast._parts.transformer.compute_dtype == torch.bfloat16
    assert fast._parts.text_encoder.dtype == torch.float32
    assert (fast._parts.decoder.blocks[0][1].int8 is not None) == (quantize == "int8")
    exact = ace_model.generate(["dream pop", "garage rock"], lyrics=LYRICS, duration=10, seed=4, steps=3)
    close = fast.generate(["dream pop", "garage rock"], lyrics=LYRICS, duration=10, seed=4, steps=3)
    for e, c in zip(exact, close):
        assert c.audio.shape == e.audio.shape == (2, 480000) and c.params["dtype"] == "bfloat16"
        assert c.params.get("quantize") == quantize
        assert c.check.ok and np.isfinite(c.audio).all() and np.abs(c.audio).max() > 0.5
        assert snr_db(e.audio, c.audio) > floor


def test_int8_only(ace_ckpt):
    with pytest.raises(InvalidParameter, match="quantize must be None or 'int8' for ACE-Step"):
        tunesmith.load(ace_ckpt[0], device="cpu", quantize="int4")


@pytest.mark.parametrize("native", [True, False])
def test_the_cpu_default_is_bfloat16_where_native(ace_ckpt, monkeypatch, native):
    from tunesmith import device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native)
    model = tunesmith.load(ace_ckpt[0], device="cpu")
    assert model.dtype == (torch.bfloat16 if native else torch.float32)
    assert isinstance(model._parts.transformer, DiTCPU) == native
    int8 = tunesmith.load(ace_ckpt[0], device="cpu", quantize="int8")  # the CPU path, whatever the CPU
    assert isinstance(int8._parts.transformer, DiTCPU) and int8.quantize == "int8"
