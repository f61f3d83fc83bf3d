"""Stable Audio 3's CPU path (cpu.py) against float32: the DiT's forms (bfloat16, int8, float32) and the SAME
decoder's (products in bfloat16 or int8, float32 around attention) each within an SNR floor of diffusers' /
tunesmith's float32 modules on tiny random weights, the int8 decoder's windows joined without a seam; the same through tunesmith.load end to end (SAME-S, Stability layout);
T5Gemma run once for a prompt generated again; a quantization it lacks one line before any loading
(float16 on the CPU: test_request.py)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tunesmith.errors import InvalidParameter
from tunesmith.stable_audio3.cpu import (DiTCPU, SameLayerMixed, banded_attention, decoder_blocks, mixed_layers,
                                         prepare_decoder)
from tunesmith.stable_audio3.decode import decode

from . import same_reference
from .stability import save_stability_checkpoint
from .tiny import save_tiny_pipeline


def snr_db(reference, x) -> float:
    reference, x = np.asarray(reference, dtype=np.float64), np.asarray(x, dtype=np.float64)
    return float(10 * np.log10((reference ** 2).sum() / max(((reference - x) ** 2).sum(), 1e-30)))


def tiny_dit(differential: bool):
    from diffusers import StableAudio3DiTModel

    torch.manual_seed(0)
    dit = StableAudio3DiTModel(io_channels=8, embed_dim=64, depth=2, num_heads=4, cond_token_dim=16,
                               global_cond_dim=16, local_add_cond_dim=9, timestep_features_dim=16, ff_mult=2,
                               num_memory_tokens=4, use_differential_attention=differential).eval()
    with torch.no_grad():  # the zero-initialised parts (residual convs, repaint embedding) made random
        for p in dit.parameters():
            if not p.any():
                p.copy_(0.2 * torch.randn(p.shape))
    return dit


def dit_inputs(length: int = 40) -> dict:
    g = torch.Generator().manual_seed(1)
    return dict(hidden_states=torch.randn(2, 8, length, generator=g), timestep=torch.tensor([0.7, 0.7]),
                encoder_hidden_states=torch.randn(2, 10, 16, generator=g),
                global_hidden_states=torch.randn(2, 16, generator=g),
                encoder_attention_mask=torch.tensor([[1] * 6 + [0] * 4, [1] * 9 + [0]]),
                local_add_cond=torch.randn(2, 9, length, generator=g))


@pytest.mark.parametrize("differential", [False, True], ids=["small", "medium"])
@pytest.mark.parametrize("dtype,quantize,floor", [(torch.float32, None, 100), (torch.bfloat16, None, 45),
                                                  (torch.float32, "int8", 30), (torch.bfloat16, "int8", 30)])
def test_dit_forms_within_snr_of_float32(differential, dtype, quantize, floor):
    """Padding swapped for the learned embedding, memory tokens, RoPE, AdaLN, the repaint condition: all of
    the DiT's inputs in play (about 137, 60 and 43 dB here)."""
    dit = tiny_dit(differential)
    inputs = dit_inputs()
    with torch.no_grad():
        reference = dit(**inputs).sample
    cpu = DiTCPU(dit, dtype, quantize)
    out = cpu(**inputs).sample
    assert out.dtype == torch.float32 and out.shape == reference.shape
    assert snr_db(reference, out) > floor
    assert torch.equal(cpu(**inputs).sample, out)  # the kept context and repaint embeddings change nothing


def test_dit_rotary_angles_stay_float32_at_two_minutes():
    """120 s is 1292 latents: RoPE angles of positions past 256 held in float32, as diffusers' float32 DiT."""
    dit = tiny_dit(False)
    inputs = dit_inputs(1300)
    with torch.no_grad():
        reference = dit(**inputs).sample
    out = DiTCPU(dit, torch.bfloat16).forward(**inputs).sample
    tail = slice(1200, None)  # the last positions, where bfloat16 angles would be off by whole radians
    assert snr_db(reference[:, :, tail], out[:, :, tail]) > 40


def random_same(kind: str):
    from diffusers import AutoencoderSAME

    from tunesmith.stable_audio3.same_s import AutoencoderSAMES, SAMESConfig

    torch.manual_seed(0)
    if kind == "SAME-S":
        vae = AutoencoderSAMES(SAMESConfig(audio_channels=2, patch_size=8, width=32, stride=4, depth=4, latent_dim=8,
                                           dim_heads=8, ff_mult=2, chunk_size=8))
    else:
        vae = AutoencoderSAME(audio_channels=2, patch_size=8, encoder_channels=8, encoder_c_mults=(2,),
                              encoder_strides=(4,), encoder_transformer_depths=(2,), latent_dim=8, dim_heads=8,
                              ff_mult=2, sampling_rate=4096)
    with torch.no_grad():
        for p in vae.parameters():
            if not p.any():
                p.copy_(0.2 * torch.randn(p.shape))
    return vae.eval()


@pytest.mark.parametrize("kind", ["SAME-S", "SAME-L"])
@pytest.mark.parametrize("dtype,quantize,floor", [(torch.float32, None, 100), (torch.bfloat16, None, 35),
                                                  (torch.float32, "int8", 25)])
def test_same_decoder_forms_within_snr_of_float32(kind, dtype, quantize, floor):
    """Windowed decode (3 windows) with the CPU layers against the module's own float32 layers (about 44-51 dB
    in bfloat16; int8 products, attention and the feed-forward's output kept float32: 29 and 38 dB)."""
    vae = random_same(kind)
    z = torch.randn(1, 8, 300, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = decode(vae, z, 300 * 32, window=128)
        fast = prepare_decoder(copy.deepcopy(vae), dtype, quantize)
        audio = decode(fast, z, 300 * 32, window=128)
    assert any(isinstance(m, SameLayerMixed) for m in fast.modules())
    assert snr_db(reference, audio) > floor


@pytest.mark.parametrize("tokens, band", [(68, 17), (70, 17), (5, 17), (300, 9), (1, 3)])
def test_banded_attention_is_attention_under_diffusers_band_mask(tokens, band):
    """SAME-L's band computed in blocks (queries a multiple of the band or not, a sequence shorter than one
    block) equals dense attention under diffusers' own mask, in float64 to rounding."""
    import torch.nn.functional as F
    from diffusers.models.autoencoders.autoencoder_same import _band_mask

    g = torch.Generator().manual_seed(tokens)
    q, k, v = (torch.randn(2, 3, tokens, 8, generator=g, dtype=torch.float64) for _ in range(3))
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=_band_mask(tokens, band, q.device, q.dtype))
    torch.testing.assert_close(banded_attention(q, k, v, band), dense, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["SAME-S", "SAME-L"])
def test_a_gpus_half_precision_decoder_is_lent_for_the_decode_alone(kind):
    """On a GPU in half precision the decoder runs mixed_layers (bfloat16 products, float32 attention), swapped
    in for the decode and its own float32 layers put back: here on the CPU, the same code."""
    vae = random_same(kind)
    own = [block.transformers for block in decoder_blocks(vae)]
    z = torch.randn(1, 8, 300, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = decode(vae, z, 300 * 32, window=128)
        half = decode(vae, z, 300 * 32, window=128, layers=mixed_layers(vae, torch.bfloat16))
        again = decode(vae, z, 300 * 32, window=128)
    assert [block.transformers for block in decoder_blocks(vae)] == own
    assert torch.equal(again, reference) and 35 < snr_db(reference, half) < 100


def test_the_mixed_layer_keeps_its_tensors_on_the_input_device():
    """The layer's own tensors (RoPE angles, computed on the host) follow its input to the device: run on
    PyTorch's meta device, which holds no values, a host tensor would fail the first op it meets."""
    vae = random_same("SAME-L").to("meta")
    layer = mixed_layers(vae, torch.bfloat16)[0][0]
    x = torch.empty(2, 17, layer.norm_attn[1].shape[-1], device="meta")  # [N, T, D]: DyT's gamma is [D]
    assert layer(x).device.type == "meta" and layer(x).shape == x.shape


def test_the_sa3_model_decodes_in_half_precision_off_the_cpu(sa3_model, monkeypatch):
    """Which layers the model decodes with: its own on the CPU and in float32; on a GPU in half precision
    mixed_layers, made once and dropped when the parts move (the CPU retry moves them)."""
    assert sa3_model._decoder_layers() is None
    monkeypatch.setattr(sa3_model, "device", torch.device("cuda"))
    monkeypatch.setattr(sa3_model, "dtype", torch.float32)
    assert sa3_model._decoder_layers() is None
    monkeypatch.setattr(sa3_model, "dtype", torch.bfloat16)
    layers = sa3_model._decoder_layers()
    assert all(isinstance(layer, SameLayerMixed) for block in layers for layer in block)
    assert sa3_model._decoder_layers() is layers
    sa3_model._parts.to(torch.device("cpu"), torch.float32)
    assert sa3_model._parts.half_decoder is None


@pytest.mark.parametrize("kind", ["SAME-S", "SAME-L"])
def test_the_int8_decoders_windows_join_without_a_seam(kind):
    """int8 activations are scaled per product call, so each window rounds a little differently from the
    whole clip: the joined audio must be as close to float32 at the windows' seams as inside them (a step
    at a seam would be a click), and close to the int8 decode of the whole clip at once."""
    vae = random_same(kind)
    z = torch.randn(1, 8, 300, generator=torch.Generator().manual_seed(2))
    hop = 32
    with torch.no_grad():
        reference = decode(vae, z, 300 * hop, window=128)  # float32: the windows join exactly (test_stability)
        fast = prepare_decoder(copy.deepcopy(vae), torch.float32, "int8")
        joined = decode(fast, z, 300 * hop, window=128)
        whole = decode(fast, z, 300 * hop, window=300)
    error = (joined - reference)[0].pow(2).sum(0)  # [samples]
    seams = [w * hop for w in (128, 256)]
    near = torch.cat([error[s - 2 * hop:s + 2 * hop] for s in seams])  # two latents each side of each seam
    assert near.mean() < 2 * error.mean()  # no more than 3 dB worse at the seams than overall
    jumps = (joined - reference)[0].diff(dim=-1).abs().amax(0)  # how the error changes sample to sample
    inside = torch.ones_like(jumps, dtype=torch.bool)
    inside[[s - 1 for s in seams]] = False
    assert all(jumps[s - 1] <= jumps[inside].max() for s in seams)  # no step in the error across a seam
    assert snr_db(whole, joined) > 24  # 28 and 36 dB: each form's own rounding


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    """A Stability-layout Small-like checkpoint (plain-attention DiT, SAME-S) and its float32 model."""
    import tunesmith

    root = tmp_path_factory.mktemp("sa3-cpu")
    pipe = save_tiny_pipeline(root / "diffusers", seed=3)
    sizes = same_reference.Sizes()
    save_stability_checkpoint(root / "stability", pipe,
                              same=(same_reference.same_s_config(sizes), same_reference.random_same_s(sizes)))
    return root / "stability", tunesmith.load(root / "stability", device="cpu", dtype="float32")


@pytest.mark.parametrize("dtype,quantize,floor", [("bfloat16", None, 30), ("float32", "int8", 20)])
def test_generate_on_the_cpu_path_within_snr(small_folder, dtype, quantize, floor):
    """Same seeds, same noise: text to audio and a repaint, clip for clip within the floor of float32's."""
    import tunesmith

    folder, reference_model = small_folder
    fast = tunesmith.load(folder, device="cpu", dtype=dtype, quantize=quantize)
    assert isinstance(fast._parts.transformer, DiTCPU)
    for options in ({}, {"audio_prompt": (np.full((2, 2048), 0.1, np.float32), 4096), "repaint": (0.1, 0.3)}):
        reference = reference_model.generate(["rain", "warm pad"], duration=0.5, seed=3, steps=4, **options)
        clips = fast.generate(["rain", "warm pad"], duration=0.5, seed=3, steps=4, **options)
        for ref, clip in zip(reference, clips):
            assert clip.audio.shape == ref.audio.shape and np.abs(ref.audio).max() > 0.01
            assert snr_db(ref.audio, clip.audio) > floor
            assert clip.params["dtype"] == dtype and clip.params.get("quantize") == quantize


def test_the_text_encoder_runs_once_for_a_prompt_made_again(small_folder):
    folder, model = small_folder
    calls = []
    hook = model._parts.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        first, = model.generate("calm piano", duration=0.25, seed=1, steps=2)
        second, = model.generate("calm piano", duration=0.25, seed=1, steps=2)
        model.generate("calm piano", duration=0.5, seed=2, steps=2)
    finally:
        hook.remove()
    assert len(calls) == 1
    np.testing.assert_array_equal(first.audio, second.audio)


def test_a_quantization_the_family_lacks_is_one_line_before_loading(tmp_path):
    import tunesmith

    with pytest.raises(InvalidParameter) as err:  # no checkpoint there: the options are checked first
        tunesmith.StableAudio3.from_pretrained(tmp_path / "nothing", device="cpu", quantize="int4")
    assert str(err.value) == "quantize must be None or 'int8' for Stable Audio 3 models, got 'int4'"
