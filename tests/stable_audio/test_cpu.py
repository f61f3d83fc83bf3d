"""The CPU speed levers compute what the plain diffusers / transformers modules compute.

Tolerances: float32 variants agree to float32 rounding (the DiT exactly; the decoder to 1e-5 of the
signal's scale: oneDNN sums tiles in another order); bfloat16 and int8 are held to an SNR floor in dB
(10 log10 of signal power over error power), well under what they reach (BENCHMARKS.md has the real
sizes' figures)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tunesmith.diffusion import ops
from tunesmith.stable_audio import cpu
from tunesmith.stable_audio.sample import encode_text


def snr_db(reference: torch.Tensor, x: torch.Tensor) -> float:
    reference, x = reference.double(), x.double()
    return 10 * torch.log10(reference.pow(2).sum() / (reference - x).pow(2).sum()).item()


# ----------------------------------------------------------------------------------------------- Snake


def torch_snake(x, alpha, inv_beta):
    return x + inv_beta[:, None] * torch.sin(alpha[:, None] * x).pow(2)


@pytest.fixture(params=["kernel", "torch"])
def impl(request, monkeypatch):
    """Both implementations: the compiled kernels (where they build) and torch's ops."""
    if request.param == "torch":
        monkeypatch.setattr(ops, "kernels", lambda: None)
    elif ops.kernels() is None:
        pytest.skip("no C compiler here: the kernels are not built")
    return request.param


def test_snake_equals_torch_on_a_slice(impl):
    C, T = 12, 700
    x = torch.randn(2, C, T) * 30  # phases up to about 300 rad
    alpha, inv_beta = torch.rand(C) * 3 + 0.05, torch.rand(C) * 2
    view = x[:, :, 37:550]  # rows evenly spaced, not contiguous
    out = ops.snake(view, alpha, inv_beta, out=torch.empty(2, C, 513))
    reference = torch_snake(view.double(), alpha.double(), inv_beta.double())
    assert (out.double() - reference).abs().max() <= 2e-6 * reference.abs().max()


def test_snake_rounds_to_bfloat16_as_torch(impl):
    C, T = 8, 1000
    x = torch.randn(1, C, T) * 4
    alpha, inv_beta = torch.rand(C) + 0.5, torch.rand(C)
    expected = torch_snake(x, alpha, inv_beta).bfloat16()
    out = ops.snake(x, alpha, inv_beta, out=torch.empty(1, C, T, dtype=torch.bfloat16))
    same = (out == expected).float().mean().item()
    assert same > 0.999  # the rest sit on a rounding boundary: one bfloat16 step apart
    assert ((out.float() - expected.float()).abs() <= expected.float().abs() * 2 ** -7).all()
    from_bf16 = ops.snake(x.bfloat16(), alpha, inv_beta, out=torch.empty(1, C, T))  # bfloat16 in, float32 out
    assert torch.allclose(from_bf16, torch_snake(x.bfloat16().float(), alpha, inv_beta), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------- VAE decoder


def tiny_vae(strides=(2, 3, 4), seed=0):
    """An Oobleck VAE with an odd stride (3: its transposed conv drops a sample) and random Snake
    parameters (diffusers starts them at zero: every channel alike)."""
    from diffusers import AutoencoderOobleck

    torch.manual_seed(seed)
    vae = AutoencoderOobleck(encoder_hidden_size=6, downsampling_ratios=list(strides), channel_multiples=[1, 2, 4],
                             decoder_channels=6, decoder_input_channels=5, audio_channels=2).eval()
    for name, p in vae.decoder.named_parameters():
        if name.endswith(("alpha", "beta")):
            p.data.normal_(0, 0.5)
    return vae


@torch.inference_mode()
def test_decoder_float32_equals_diffusers(impl):
    vae = tiny_vae()
    latents = torch.randn(2, 5, 23)
    reference = vae.decoder(latents)
    for tile_values in (64, 1000, 1 << 20):  # from many tiles (5 samples: fewer than the halo of 27) to one
        audio = cpu.OobleckDecoderCPU(vae.decoder, torch.float32, tile_values=tile_values, min_tile=1)(latents)
        assert audio.shape == reference.shape and audio.dtype == torch.float32
        assert (audio - reference).abs().max() <= 1e-5 * reference.abs().max()


@torch.inference_mode()
def test_decoder_seams_are_exact():
    """Tiles read exactly what the whole-signal convolutions read: any tiling, the same values."""
    vae = tiny_vae(strides=(2, 4, 2))
    latents = torch.randn(1, 5, 40)
    decoder = cpu.OobleckDecoderCPU(vae.decoder, torch.float32, tile_values=1 << 20, min_tile=1)
    whole = decoder(latents)
    for tile_values in (100, 300, 2000, 5000):
        decoder.tile_values = tile_values
        assert (decoder(latents) - whole).abs().max() <= 5e-6 * whole.abs().max()  # float32 rounding


@torch.inference_mode()
def test_decoder_bfloat16_within_snr():
    vae = tiny_vae()
    latents = torch.randn(2, 5, 23)
    audio = cpu.OobleckDecoderCPU(vae.decoder, torch.bfloat16, tile_values=500, min_tile=1)(latents)
    assert audio.dtype == torch.float32
    assert snr_db(vae.decoder(latents), audio) > 25  # 6-channel layers: few terms per sum (about 33 dB)


def test_quantize_taps_are_the_convolutions_columns(impl):
    C, taps, dilation, L = 5, 7, 3, 40
    x = torch.randn(C, L + (taps - 1) * dilation + 9)[:, :L + (taps - 1) * dilation]  # rows evenly spaced
    for source in (x, x.bfloat16()):
        cols, scale = ops.quantize_taps(source, taps, dilation, L)
        assert cols.shape == (taps * C, L) and cols.dtype == torch.int8
        assert scale == pytest.approx(source.float().abs().max().item() / 127, rel=1e-6)
        def same(q, values, scale):  # rounded to the nearest step (a value within float32 rounding of a tie either way)
            exact = values.double() / scale
            return ((q.double() - exact).abs() <= 0.5 + 1e-5).all()

        for k in range(taps):
            assert same(cols[k * C:(k + 1) * C], source[:, k * dilation:k * dilation + L], scale)
        given, given_scale = ops.quantize_taps(source, taps, dilation, L, top=2 * scale * 127)  # a known max
        assert given_scale == pytest.approx(2 * scale, rel=1e-6)
        assert same(given, torch.cat([source[:, k * dilation:k * dilation + L] for k in range(taps)]), given_scale)


def test_dequantize_rows_and_add_dequantized_equal_torch(impl):
    R, L = 6, 300
    acc = torch.randint(-50000, 50000, (R, L), dtype=torch.int32)
    scale, bias = torch.rand(R) * 1e-4, torch.randn(R)
    alpha, inv_beta = torch.rand(R) + 0.5, torch.rand(R)
    value = acc.double() * scale.double()[:, None] + bias.double()[:, None]
    for params, expected in ((None, value), ((alpha, inv_beta), torch_snake(value, alpha.double(), inv_beta.double()))):
        out = torch.empty(R, L, dtype=torch.bfloat16)
        top = ops.dequantize_rows(acc, scale, bias, params, out=out)
        assert ((out.double() - expected).abs() <= expected.abs() * 2 ** -8 + 1e-6).all()
        assert top == out.float().abs().max().item()  # the next product's activation scale, exact
    x = torch.randn(R, L + 20)
    before = x.clone()
    ops.add_dequantized(x[:, 10:10 + L], acc, scale, bias)
    assert torch.allclose(x[:, 10:10 + L].double(), before[:, 10:10 + L].double() + value, rtol=1e-6, atol=1e-5)
    assert torch.equal(x[:, :10], before[:, :10]) and torch.equal(x[:, 10 + L:], before[:, 10 + L:])


@torch.inference_mode()
def test_decoder_int8_within_snr(impl):
    """int8 products (a scale per output channel, one per tile of activations), any tiling."""
    vae = tiny_vae()
    latents = torch.randn(2, 5, 23)
    reference = vae.decoder(latents)
    for tile_values in (64, 500, 1 << 20):
        decoder = cpu.OobleckDecoderCPU(vae.decoder, torch.float32, tile_values=tile_values, min_tile=1,
                                        quantize="int8")
        audio = decoder(latents)
        assert audio.shape == reference.shape and audio.dtype == torch.float32
        assert snr_db(reference, audio) > 20  # 6-channel layers (about 30 dB; 41 at the real sizes)
        assert all(unit.w2 is None for _, _, units in decoder.blocks for unit in units)  # no bfloat16 copies kept
    with pytest.raises(ValueError, match="quantize"):
        cpu.OobleckDecoderCPU(vae.decoder, quantize="int4")


@torch.inference_mode()
def test_decoder_length_decodes_only_the_frames_needed():
    vae = tiny_vae()
    decoder = cpu.OobleckDecoderCPU(vae.decoder, torch.float32, tile_values=1 << 20)
    latents = torch.randn(1, 5, 60)
    whole = decoder(latents)
    for length in (1, 100, 24 * 17 + 5, whole.shape[-1]):
        part = decoder(latents, length=length)
        assert part.shape[-1] == length
        assert (part - whole[:, :, :length]).abs().max() <= 1e-6 * whole.abs().max()


@torch.inference_mode()
def test_decoder_reach_covers_the_receptive_field():
    """Changing one latent frame changes no audio further than `reach` frames from it."""
    vae = tiny_vae()
    decoder = cpu.OobleckDecoderCPU(vae.decoder, torch.float32)
    latents = torch.randn(1, 5, 60)
    base = decoder(latents)
    moved = latents.clone()
    moved[:, :, 30] += 1
    changed = ((decoder(moved) - base).abs().amax(dim=(0, 1)) > 0).nonzero().flatten()
    frames = changed // decoder.hop
    assert decoder.hop == 24 and len(changed) > 0
    assert max(30 - frames.min().item(), frames.max().item() - 30) <= decoder.reach


# ------------------------------------------------------------------------------------------------- DiT


def tiny_dit(qk_norm=True, seed=0):
    """A StableAudioDiTModel with grouped cross-attention heads (4 query, 2 key/value), heads of 16
    (the attention kernel's smallest) and, as small has, q/k LayerNorms (random affine, so that they
    matter)."""
    from diffusers import StableAudioDiTModel

    torch.manual_seed(seed)
    dit = StableAudioDiTModel(sample_size=24, in_channels=3, num_layers=2, attention_head_dim=16,
                              num_attention_heads=4, num_key_value_attention_heads=2, out_channels=3,
                              cross_attention_dim=32, time_proj_dim=8, global_states_input_dim=10,
                              cross_attention_input_dim=6).eval()
    if qk_norm:
        for block in dit.transformer_blocks:
            for attn in (block.attn1, block.attn2):
                attn.norm_q, attn.norm_k = nn.LayerNorm(16, eps=1e-6), nn.LayerNorm(16, eps=1e-6)
                for norm in (attn.norm_q, attn.norm_k):
                    norm.weight.data.normal_(1, 0.2)
                    norm.bias.data.normal_(0, 0.2)
    return dit


def dit_inputs(batch=2, frames=24):
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    torch.manual_seed(1)
    rotary = get_1d_rotary_pos_embed(8, frames + 1, use_real=True, repeat_interleave_real=False)
    return dict(hidden_states=torch.randn(batch, 3, frames), timestep=torch.tensor([0.37]),
                encoder_hidden_states=torch.randn(batch, 7, 6), global_hidden_states=torch.randn(batch, 1, 10),
                rotary_embedding=rotary)


@pytest.mark.parametrize("qk_norm", [True, False], ids=["qk-norm", "plain"])
@torch.inference_mode()
def test_dit_float32_equals_diffusers(qk_norm):
    dit = tiny_dit(qk_norm)
    inputs = dit_inputs()
    reference = dit(**inputs).sample
    fast = cpu.prepare_dit(dit, torch.float32)
    out = fast(**inputs)
    assert out.sample.dtype == torch.float32  # an output with .sample, as diffusers returns
    assert torch.allclose(out.sample, reference, rtol=1e-5, atol=1e-6)
    (tuple_out,) = fast(**inputs, return_dict=False)
    assert torch.equal(tuple_out, out.sample)


@pytest.mark.parametrize("dtype, quantize, floor", [(torch.bfloat16, None, 40), (torch.bfloat16, "int8", 33)])
@torch.inference_mode()
def test_dit_reduced_precision_within_snr(impl, dtype, quantize, floor):
    dit = tiny_dit()
    inputs = dit_inputs()
    out = cpu.prepare_dit(dit, dtype, quantize)(**inputs).sample
    assert out.dtype == torch.float32
    assert snr_db(dit(**inputs).sample, out) > floor  # about 50 and 44 dB here


@torch.inference_mode()
def test_dit_context_is_reused_only_for_equal_conditioning():
    dit = tiny_dit()
    fast = cpu.prepare_dit(dit, torch.float32)
    inputs = dit_inputs()
    fast(**inputs)
    kept = fast._context_of[1]
    inputs["encoder_hidden_states"] = inputs["encoder_hidden_states"].clone()  # equal values, another tensor
    fast(**inputs)
    assert fast._context_of[1] is kept  # the keys and values of last time
    inputs["encoder_hidden_states"][1, 3, 2] += 1  # changed in place: computed again
    assert torch.allclose(fast(**inputs).sample, dit(**inputs).sample, rtol=1e-5, atol=1e-6)
    assert fast._context_of[1] is not kept


@pytest.mark.parametrize("B, H, H_kv, Tq, Tk, D", [(1, 8, 8, 257, 257, 128), (2, 4, 2, 33, 7, 64), (2, 3, 3, 5, 70, 96),
                                                    (1, 2, 1, 1, 1, 16)])
@torch.inference_mode()
def test_attention_rounds_as_torch(impl, B, H, H_kv, Tq, Tk, D):
    """bfloat16 attention (the kernel: grouped heads, a query view with strides, lengths off its
    blocks of 4 queries and 64 keys) is as close to float64 as torch's own bfloat16 attention."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    qkv = (torch.randn(B, Tq, 3, H, D) * 2).bfloat16()
    q = qkv[:, :, 0].transpose(1, 2)  # (B, H, Tq, D) with the strides of a fused projection
    k, v = (torch.randn(B, H_kv, Tk, D) * 2).bfloat16(), torch.randn(B, H_kv, Tk, D).bfloat16()
    k_all, v_all = k.repeat_interleave(H // H_kv, 1), v.repeat_interleave(H // H_kv, 1)
    exact = F.scaled_dot_product_attention(q.double(), k_all.double(), v_all.double()).transpose(1, 2)
    exact = exact.reshape(B, Tq, H * D)
    torch_bf16 = F.scaled_dot_product_attention(q, k_all, v_all).transpose(1, 2).reshape(B, Tq, H * D)
    out = ops.attention(q, k, v)
    assert out.shape == (B, Tq, H * D) and out.dtype == torch.bfloat16
    error, torch_error = (exact - out.double()).pow(2).mean(), (exact - torch_bf16.double()).pow(2).mean()
    assert error <= 1.3 * torch_error + 1e-12 * exact.pow(2).mean()  # about 55 dB below the signal, both


def test_dit_stays_on_the_cpu_in_its_dtypes():
    """Callers move their parts with .to(device, dtype): the prepared DiT keeps its own dtypes and
    refuses other devices; it takes and returns float32 (callers cast inputs to model.dtype)."""
    fast = cpu.prepare_dit(tiny_dit(), torch.bfloat16)
    assert fast.to("cpu", torch.float16) is fast and fast.dtype == torch.float32 and fast.device.type == "cpu"
    assert fast.blocks[0].qkv.weight.dtype == torch.bfloat16 and fast.proj_in.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="CPU only"):
        fast.to("meta")


def test_dit_takes_no_masks():
    fast = cpu.prepare_dit(tiny_dit(), torch.float32)
    with pytest.raises(ValueError, match="no attention masks"):
        fast(**dit_inputs(), encoder_attention_mask=torch.ones(2, 7))
    with pytest.raises(ValueError, match="quantize"):
        cpu.prepare_dit(tiny_dit(), torch.bfloat16, "int4")


# ------------------------------------------------------------------------------------------ text encoder


@torch.inference_mode()
def test_encode_text_over_the_prompts_own_tokens_equals_the_padded_run(tmp_path):
    from transformers import T5EncoderModel, T5TokenizerFast

    from .tiny import MAX_TOKENS, save_tiny_t5

    save_tiny_t5(tmp_path)
    encoder, tokenizer = T5EncoderModel.from_pretrained(tmp_path).eval(), T5TokenizerFast.from_pretrained(tmp_path)
    batch = tokenizer(["rain on a tin roof", "warm ambient pad slow dusty vinyl"], padding="max_length",
                      max_length=MAX_TOKENS, return_tensors="pt")
    assert batch.attention_mask.sum(1).max() < MAX_TOKENS  # there is padding to skip
    full = encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask)[0]
    full = full * batch.attention_mask.unsqueeze(-1)
    trimmed = encode_text(encoder, batch.input_ids, batch.attention_mask)
    assert trimmed.shape == full.shape
    assert torch.allclose(trimmed, full, rtol=1e-5, atol=1e-6)
