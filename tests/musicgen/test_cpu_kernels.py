"""The packed CPU kernels compute what torch computes, and the decoder gives the same logits with them."""

import os
import platform
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tunesmith.musicgen import cpu_kernels, cpu_step
from tunesmith.musicgen.config import DecoderConfig
from tunesmith.musicgen.linear import Int4Linear, Int8Linear, StreamLinear, specialise_linears
from tunesmith.musicgen.lm import MusicGenLM

from .conftest import cpu_has


def _kernels_expected() -> bool:
    return ((cpu_has("avx512f") or (cpu_has("avx2") and cpu_has("fma"))) and shutil.which("cc") is not None
            and os.environ.get("TUNESMITH_CPU_KERNELS") != "0")


def test_kernels_build_where_the_cpu_and_a_compiler_allow():
    """So that a failed build cannot hide behind the skips below: int8 on AVX-512 and AVX2 (which rounds
    the activations to int16), bfloat16 on AVX512-BF16."""
    if not _kernels_expected():
        pytest.skip("no AVX2 CPU or no C compiler here")
    kernels = cpu_kernels.library()
    assert kernels is not None and kernels.int8
    assert kernels.int8_rounds_x == (not cpu_has("avx512f"))
    assert kernels.bf16 == cpu_has("avx512_bf16")


@pytest.fixture()
def kernels():
    found = cpu_kernels.library()
    if found is None:
        pytest.skip("cpu_kernels unavailable here (no AVX2 or no compiler)")
    return found


@pytest.fixture()
def attend_kernels(kernels):
    if not kernels.attend:
        pytest.skip("no bfloat16 attention kernel on this CPU (AVX512-BF16 or AVX2)")
    return kernels


@pytest.fixture()
def bf16_kernels(kernels):
    if not kernels.bf16:
        pytest.skip("no AVX512-BF16 on this CPU")
    return kernels


@pytest.fixture()
def fresh_library(monkeypatch, tmp_path):
    """library() looked up again under the test's environment, and restored afterwards."""
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    cpu_kernels.library.cache_clear()
    yield
    monkeypatch.undo()
    cpu_kernels.library.cache_clear()


def test_disabled_by_environment(fresh_library, monkeypatch, caplog):
    monkeypatch.setenv("TUNESMITH_CPU_KERNELS", "0")
    with caplog.at_level("WARNING", logger="tunesmith"):
        assert cpu_kernels.library() is None
    assert not caplog.records  # off on purpose: nothing to warn about


@pytest.fixture()
def avx512(monkeypatch):
    """A CPU the kernels would run on, so that their absence is worth a warning."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the kernels never apply off x86-64")
    monkeypatch.setattr(cpu_kernels, "_cpu_signature", lambda: "model name\t: test\nflags\t: fpu avx512f")


def test_no_compiler_means_torch_kernels(fresh_library, avx512, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with caplog.at_level("WARNING", logger="tunesmith"):
        assert cpu_kernels.library() is None
    assert not list(tmp_path.glob("kernels/*.so"))
    assert [r.getMessage() for r in caplog.records if "no-such-cc not found" in r.getMessage()]


def test_a_failed_build_is_said_once(fresh_library, avx512, monkeypatch, tmp_path, caplog):
    cc = tmp_path / "broken-cc"
    cc.write_text("#!/bin/sh\necho 'cpu_kernels.c:1:1: error: no such intrinsic' >&2\nexit 1\n")
    cc.chmod(0o755)
    monkeypatch.setenv("CC", str(cc))
    with caplog.at_level("WARNING", logger="tunesmith"):
        assert cpu_kernels.library() is None
        assert cpu_kernels.library() is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "fast CPU kernels are off" in lines[0] and "error: no such intrinsic" in lines[0]


def test_unwritable_cache_builds_in_a_temporary_folder(fresh_library, monkeypatch, tmp_path, caplog):
    """A cache folder that cannot be made (a file stands in its path: root writes through chmod 555)."""
    if not _kernels_expected():
        pytest.skip("no AVX2 CPU or no C compiler here")
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "file" / "inside"))
    with caplog.at_level("WARNING", logger="tunesmith"):
        kernels = cpu_kernels.library()
    assert kernels is not None and kernels.int8 and not caplog.records
    assert Path(kernels.lib._name).parent.parent == Path(tempfile.gettempdir())


def test_generation_without_kernels(fresh_library, monkeypatch, mono_ckpt):
    """The torch path (oneDNN linears where oneDNN packs bfloat16, plain ones on AVX2-only CPUs; a float32
    cache) still generates, for CPUs the kernels do not cover."""
    from tunesmith import MusicGen
    from tunesmith.musicgen.linear import PackedLinear, cpu_packing_available

    monkeypatch.setenv("TUNESMITH_CPU_KERNELS", "0")
    mg = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="bfloat16")
    linear = PackedLinear if cpu_packing_available(torch.bfloat16) else torch.nn.Linear
    assert type(mg._model.lm.layers[0].fc1) is linear and mg._model.lm.cache_dtype == torch.float32
    clip = mg.generate("calm lofi piano", duration=0.5, seed=3)[0]
    assert clip.audio.shape[-1] == round(0.5 * clip.sample_rate) and clip.check.ok


@pytest.mark.parametrize("dtype", [torch.int8, torch.bfloat16])
def test_pack_unpack_round_trip(dtype):
    w = torch.randint(-100, 100, (8, 3072)).to(dtype)
    packed = cpu_kernels.pack(w)
    vec = cpu_kernels.VEC[dtype]
    chunk = 1024  # the largest multiple of vec dividing 3072 within CHUNK
    assert cpu_kernels.CHUNK == chunk
    assert packed.shape == (3, 2, chunk // vec, 4, vec)  # [chunks, row blocks, steps, rows, vec]
    assert torch.equal(packed[1, 1, 3, 2], w[4 + 2, chunk + 3 * vec: chunk + 4 * vec])
    assert torch.equal(cpu_kernels.unpack(packed), w)
    assert not cpu_kernels.packable(w[:6]) and not cpu_kernels.packable(w[:, :100])
    assert not cpu_kernels.packable(w.float())


def rounded_rows(x: torch.Tensor, levels: int = 32767) -> torch.Tensor:
    """x as the AVX2 int8 kernel takes it: each row rounded to int16, its largest |value| to 32767 (the int4
    kernel: to int8, 127)."""
    x = x.double()
    scale = (x.abs().amax(-1, keepdim=True) / levels).float().double()  # the kernel's float32 scale
    return torch.round(x * (1 / scale).float().double()) * scale


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 16])
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("in_features", [256, 3072])  # one chunk of K, three
def test_int8_gemv_matches_dequantized_matmul(kernels, rows, x_dtype, in_features):
    torch.manual_seed(rows)
    w = torch.randint(-127, 128, (96, in_features), dtype=torch.int8)
    scale = torch.rand(96) / 100
    x = torch.randn(rows, in_features).to(x_dtype)
    y = cpu_kernels.gemv(kernels, x, cpu_kernels.pack(w), scale)
    reference = (rounded_rows(x) if kernels.int8_rounds_x else x.double()) @ w.double().t() * scale.double()
    assert y.dtype == x_dtype and y.shape == (rows, 96)
    tolerance = 1e-5 if x_dtype == torch.float32 else 1e-2  # float32 sums; bfloat16 output rounding
    assert ((y.double() - reference).abs() / reference.abs().max()).max() < tolerance


@pytest.mark.parametrize("rows", [1, 2, 4, 7])
@pytest.mark.parametrize("in_features", [512, 4096])
def test_bf16_gemv_matches_matmul(bf16_kernels, rows, in_features):
    torch.manual_seed(rows)
    w = torch.randn(64, in_features).bfloat16()
    x = torch.randn(2, rows, in_features).bfloat16()  # leading dims are rows too
    y = cpu_kernels.gemv(bf16_kernels, x, cpu_kernels.pack(w), None)
    reference = x.double() @ w.double().t()  # bfloat16 inputs are exact in float64
    assert y.shape == (2, rows, 64)
    assert ((y.double() - reference).abs() / reference.abs().max()).max() < 1e-2
    y32 = cpu_kernels.gemv(bf16_kernels, x.float(), cpu_kernels.pack(w), None)  # float32 in and out
    assert y32.dtype == torch.float32 and ((y32.double() - reference).abs() / reference.abs().max()).max() < 1e-5


def dequantized_int4(w: torch.Tensor) -> torch.Tensor:
    """pack_int4's weights from its definition: per group of 64 inputs, a bfloat16 minimum and scale (the
    range over 15), the nibble rounded from them: minimum + scale * nibble."""
    groups = w.double().view(w.shape[0], -1, 64)
    low = groups.amin(-1, keepdim=True).float().bfloat16().double()
    scale = ((groups.amax(-1, keepdim=True) - groups.amin(-1, keepdim=True)) / 15).float().bfloat16().double()
    return (((groups - low) / scale).round().clamp(0, 15) * scale + low).view(w.shape)


def test_int4_pack_unpack():
    torch.manual_seed(0)
    w = torch.randn(8, 3072) * torch.linspace(0.01, 1, 3072)  # groups of different ranges
    packed = cpu_kernels.pack_int4(w)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 2, 4 * (512 + 16 * 4))  # chunks of 1024
    assert cpu_kernels.int4_sizes(packed) == (8, 3072, 1024)
    torch.testing.assert_close(cpu_kernels.unpack_int4(packed).double(), dequantized_int4(w), atol=1e-6, rtol=1e-6)
    assert (cpu_kernels.unpack_int4(packed) - w).abs().max() < 0.6 * (w.abs().max() * 2 / 15)  # half a step, about
    assert not cpu_kernels.int4_packable(w[:6]) and not cpu_kernels.int4_packable(w[:, :96])


@pytest.fixture(params=["native", "avx2"])
def int4_kernels(request):
    """This CPU's own build and the AVX2 build: int4 is the same AVX2 code in both."""
    kernels = request.getfixturevalue("kernels" if request.param == "native" else "avx2_kernels")
    assert kernels.int4
    return kernels


@pytest.mark.parametrize("rows", [1, 2, 3, 16, 40])  # 40: three passes over the weight
@pytest.mark.parametrize("in_features", [256, 3072])  # one chunk of K, three
def test_int4_gemv_matches_dequantized_matmul(int4_kernels, rows, in_features):
    torch.manual_seed(rows)
    w = torch.randn(96, in_features)
    x = torch.randn(rows, in_features)
    y = cpu_kernels.gemv(int4_kernels, x, cpu_kernels.pack_int4(w), None)
    reference = rounded_rows(x, 127) @ dequantized_int4(w).t()
    assert y.dtype == torch.float32 and y.shape == (rows, 96)
    assert ((y.double() - reference).abs() / reference.abs().max()).max() < 1e-5
    yb = cpu_kernels.gemv(int4_kernels, x.bfloat16(), cpu_kernels.pack_int4(w), None)  # bfloat16 in and out
    reference = rounded_rows(x.bfloat16(), 127) @ dequantized_int4(w).t()
    assert yb.dtype == torch.bfloat16 and ((yb.double() - reference).abs() / reference.abs().max()).max() < 1e-2


def test_int4_linear_on_the_kernels_and_for_a_prefill(int4_kernels):
    torch.manual_seed(0)
    linear = nn.Linear(128, 64, bias=True)
    layer = Int4Linear(linear, torch.float32, int4_kernels)
    assert layer.kernels is int4_kernels and layer.weight.dtype == torch.uint8
    x = torch.randn(200, 128)  # a prefill: more rows than the kernel takes, through torch
    reference = x.double() @ dequantized_int4(linear.weight.detach()).t() + linear.bias.double()
    assert ((layer(x).double() - reference).abs().max() / reference.abs().max()) < 1e-5
    few = layer(x[:8])  # the kernel: the activations rounded to int8 rows
    rounded = rounded_rows(x[:8], 127) @ dequantized_int4(linear.weight.detach()).t() + linear.bias.double()
    assert ((few.double() - rounded).abs().max() / rounded.abs().max()) < 1e-5
    assert Int4Linear(nn.Linear(96, 64), torch.float32, int4_kernels).kernels is None  # 96 inputs: no group of 64


def test_int8_gemv_takes_zero_and_tiny_rows_and_declines_inf(kernels):
    """The AVX2 kernel scales each row to its largest value: a zero or vanishing row must give zeros, not a
    division by zero; a row with inf goes back to torch, which carries it. int4 rounds the rows alike."""
    w = torch.randint(-127, 128, (8, 64), dtype=torch.int8)
    x = torch.stack([torch.zeros(64), torch.full((64,), 1e-35), torch.randn(64)])
    y = cpu_kernels.gemv(kernels, x, cpu_kernels.pack(w), torch.ones(8))
    assert torch.isfinite(y).all() and y[:2].abs().max() < 1e-30
    x[2, 5] = float("inf")
    if kernels.int8_rounds_x:
        assert cpu_kernels.gemv(kernels, x, cpu_kernels.pack(w), torch.ones(8)) is None
    if kernels.int4:
        w4 = cpu_kernels.pack_int4(w.float())
        assert cpu_kernels.gemv(kernels, x, w4, None) is None
        y = cpu_kernels.gemv(kernels, x[:2], w4, None)
        assert torch.isfinite(y).all() and y.abs().max() < 1e-30


def test_gemv_declines_what_it_does_not_take(kernels):
    w = cpu_kernels.pack(torch.randint(-5, 5, (8, 64), dtype=torch.int8))
    rows = cpu_kernels.MAX_ROWS * (cpu_kernels.AVX2_INT8_PASSES if kernels.int8_rounds_x else 1)
    assert cpu_kernels.gemv(kernels, torch.randn(rows + 1, 64), w, torch.ones(8)) is None  # too many rows
    assert cpu_kernels.gemv(kernels, torch.randn(2, 64, dtype=torch.float64), w, torch.ones(8)) is None


@pytest.mark.parametrize("length", [1, 17, 300])
def test_attention_matches_sdpa_on_a_strided_cache(attend_kernels, length):
    torch.manual_seed(length)
    B, H, hd = 2, 3, 64
    cache_k, cache_v = torch.randn(B, H, 512, hd).bfloat16(), torch.randn(B, H, 512, hd).bfloat16()
    q = torch.randn(B, 1, 3, H, hd).bfloat16().permute(2, 0, 3, 1, 4)[0]  # (B, H, 1, hd), strided like qkv's
    k, v = cache_k[:, :, :length], cache_v[:, :, :length]
    bias = torch.zeros(B, 1, 1, length, dtype=torch.bfloat16)
    bias[1, ..., length // 2 + 1:] = torch.finfo(torch.bfloat16).min  # the second row sees half the keys
    for mask in (None, bias):
        y = cpu_kernels.attend_one(attend_kernels, q, k, v, mask)
        reference = F.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                                    attn_mask=None if mask is None else mask.double())
        assert y.shape == (B, H, 1, hd)
        assert (y.double() - reference).abs().max() < 1e-2 * reference.abs().max()


def test_attention_declines_other_shapes(attend_kernels):
    q, k = torch.randn(1, 2, 1, 64).bfloat16(), torch.randn(1, 2, 5, 64).bfloat16()
    assert cpu_kernels.attend_one(attend_kernels, q.float(), k.float(), k.float(), None) is None  # float32
    assert cpu_kernels.attend_one(attend_kernels, torch.randn(1, 2, 3, 64).bfloat16(), k, k, None) is None  # 3 queries
    assert cpu_kernels.attend_one(attend_kernels, q[..., :16], k[..., :16], k[..., :16], None) is None  # head dim 16


def test_avx2_int8_takes_a_batch_of_rows_in_passes(avx2_kernels):
    """More rows than the kernel takes at once (a batch of prompts) on AVX2's int8: the rows go through it
    MAX_ROWS at a time, the same numbers as calls of their own (AVX-512 builds leave them to torch)."""
    kernels = avx2_kernels
    torch.manual_seed(0)
    w, scale = cpu_kernels.pack(torch.randint(-127, 128, (32, 256), dtype=torch.int8)), torch.rand(32)
    x = torch.randn(2, 20, 256)  # 40 rows: three passes, the last of 8
    y = cpu_kernels.gemv(kernels, x, w, scale)
    one_by_one = torch.stack([cpu_kernels.gemv(kernels, row[None], w, scale)[0] for row in x.reshape(40, 256)])
    assert y.shape == (2, 20, 32) and torch.equal(y.reshape(40, 32), one_by_one)


def test_linear_modules_fall_back_to_torch_for_many_rows(kernels):
    torch.manual_seed(0)
    linear = nn.Linear(128, 64, bias=True)
    x = torch.randn(200, 128)  # a prefill: more rows than the kernels take
    int8 = Int8Linear(linear, torch.float32, kernels)
    assert int8.weight.dim() == 5  # packed
    few = torch.cat([int8(x[i:i + 8]) for i in range(0, 200, 8)])  # kernel
    torch.testing.assert_close(int8(x), few, atol=1e-4, rtol=1e-4)  # torch, unpacked
    if kernels.bf16:
        stream = StreamLinear(linear.bfloat16(), kernels)
        xb = x.bfloat16()
        few = torch.cat([stream(xb[i:i + 8]) for i in range(0, 200, 8)])
        torch.testing.assert_close(stream(xb).float(), few.float(), atol=0.05, rtol=0.02)


def _decoder_logits(lm: MusicGenLM, codes: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Prefill the first column, then one column at a time through the cache -> logits [B, K, T, V]."""
    lm.set_condition(text, mask)
    lm.setup_cache(batch=codes.shape[0], max_len=codes.shape[2])
    out = [lm(codes[:, :, t:t + 1], torch.tensor([t]), kv_len=t + 1) for t in range(codes.shape[2])]
    return torch.cat(out, dim=2).float()


def decoder_case():
    """A 2-layer, 128-wide float32 decoder, codes and a text condition, and its logits: what a faster
    form of the decoder is compared with."""
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=64, dim=128, n_heads=2, n_layers=2, ffn_dim=256, n_codebooks=4, text_dim=32,
                        text_proj=True, max_positions=256)
    reference = MusicGenLM(cfg)
    nn.init.normal_(reference.embed, std=0.5)
    reference.eval()
    codes = torch.randint(0, 64, (2, 4, 40))
    text, mask = torch.randn(2, 5, 32), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    expected = _decoder_logits(reference, codes, text, mask)
    return cfg, reference, codes, text, mask, expected


@torch.inference_mode()
def test_decoder_with_kernels_matches_float32(bf16_kernels):
    """A bfloat16 decoder on the kernels (packed linears, bfloat16 cache and attention) stays within
    bfloat16's error of the float32 decoder (int8 too: its per-row scales cost little more)."""
    cfg, reference, codes, text, mask, expected = decoder_case()
    for quantize in (None, "int8"):
        lm = MusicGenLM(cfg)
        lm.load_state_dict(reference.state_dict())
        lm.to(torch.bfloat16).eval()
        specialise_linears(lm, torch.device("cpu"), quantize)
        assert isinstance(lm.layers[0].fc1, Int8Linear if quantize else StreamLinear)
        assert lm.cache_dtype == torch.bfloat16
        got = _decoder_logits(lm, codes, text, mask)
        assert (got - expected).abs().max() < 0.015 * expected.abs().max(), quantize  # measured: 0.5-0.6%


@torch.inference_mode()
def test_int4_decoder_on_the_kernels(int4_kernels):
    """A decoder asked for int4 on the kernels: int4 step linears, int8 heads, a bfloat16 cache (a float32
    model on AVX2, a bfloat16 one on AVX512-BF16), the whole step; its logits are those of the same decoder
    with the int4 weights dequantized into float32 linears (up to the activations' int8 rounding and the
    cache's bfloat16), and within int4's error of float32."""
    if not int4_kernels.step:
        pytest.skip("no whole step in this build (AVX-512 without BF16)")
    dtype = torch.bfloat16 if int4_kernels.bf16 else torch.float32
    cfg, reference, codes, text, mask, expected = decoder_case()
    lm = MusicGenLM(cfg)
    lm.load_state_dict(reference.state_dict())
    lm.to(dtype).eval()
    specialise_linears(lm, torch.device("cpu"), "int4")
    assert isinstance(lm.layers[0].fc1, Int4Linear) and lm.layers[0].fc1.kernels is int4_kernels
    assert isinstance(lm.heads, Int8Linear) and lm.cache_dtype == torch.bfloat16
    got = _decoder_logits(lm, codes, text, mask)
    assert isinstance(lm.whole_step[1], cpu_step.CPUStep)

    dequantized = MusicGenLM(cfg)
    dequantized.load_state_dict(reference.state_dict())
    dequantized.eval()
    for name, module in lm.named_modules():
        if isinstance(module, Int4Linear):
            dequantized.get_submodule(name).weight.copy_(cpu_kernels.unpack_int4(module.weight))
        elif isinstance(module, Int8Linear):
            dequantized.get_submodule(name).weight.copy_(cpu_kernels.unpack(module.weight).float() * module.scales[:, None])
    same_weights = _decoder_logits(dequantized, codes, text, mask)
    assert (got - same_weights).abs().max() < 0.01 * same_weights.abs().max()  # measured: 0.47% (bfloat16), 0.38%
    assert (got - expected).abs().max() < 0.08 * expected.abs().max()  # measured: 4.1%


@torch.inference_mode()
def test_int8_decoder_on_avx2_kernels_matches_float32(avx2_kernels):
    """AVX2: a float32 decoder asked for int8 packs every step linear for the int8 kernel (activations
    rounded to int16), keeps a bfloat16 cache and decodes through the whole-step kernel, within int8's error
    of float32; unquantized it keeps the float32 cache (the reference's numbers)."""
    kernels = avx2_kernels
    cfg, reference, codes, text, mask, expected = decoder_case()
    lm = MusicGenLM(cfg)
    lm.load_state_dict(reference.state_dict())
    lm.eval()
    assert lm.cache_dtype == torch.float32 and not lm.quantized
    specialise_linears(lm, torch.device("cpu"), "int8")
    assert isinstance(lm.layers[0].fc1, Int8Linear) and lm.layers[0].fc1.kernels is kernels
    assert isinstance(lm.heads, Int8Linear) and lm.quantized and lm.cache_dtype == torch.bfloat16
    got = _decoder_logits(lm, codes, text, mask)
    assert lm.layers[0].attn.cache.k.dtype == torch.bfloat16 and isinstance(lm.whole_step[1], cpu_step.CPUStep)
    assert (got - expected).abs().max() < 0.015 * expected.abs().max()
