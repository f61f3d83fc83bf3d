"""MusicGen-Style on a tiny audiocraft-format checkpoint built by the tests (style_checkpoint.py).

References: transformers' MusicgenMelodyForCausalLM (also prefix-conditioned) for the decoder, the
conditioner's definition written out below, and three separate forward passes for the guidance."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from tunesmith.errors import CheckpointError, InvalidParameter, TunesmithError

from ..test_cli import one_error_line, run
from .style_checkpoint import CARD, DIM, HEADS, LAYERS, N_Q

SR = 32000
W = "condition_provider.conditioners.self_wav."


@pytest.fixture(scope="module")
def style_model(style_ckpt):
    from tunesmith import load

    return load(style_ckpt[0], device="cpu", dtype="float32")


def music(seconds=5.0, seed=0, base=220.0):
    """A few notes over noise: not silent, different per seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    notes = base * 2 ** (rng.integers(0, 12, size=8) / 12)
    audio = sum(np.sin(2 * np.pi * f * t) * ((t * 2).astype(int) % 8 == i) for i, f in enumerate(notes))
    return (0.3 * audio + 0.05 * rng.normal(size=t.size)).astype(np.float32)


def test_family_alias_and_description(style_ckpt, style_model):
    from tunesmith.hub import ALIASES
    from tunesmith.models import describe, family_of

    assert family_of(style_ckpt[0]) == "musicgen" and describe(style_ckpt[0]).style
    assert ALIASES["style"].repo == "facebook/musicgen-style" and describe("style").style
    assert style_model.is_style and not style_model.is_melody
    assert style_model._model.config.decoder.n_codebooks == N_Q and style_model.frame_rate == 50


def test_decoder_with_a_prefix_matches_transformers_melody_decoder(style_ckpt, style_model):
    """Our LM, loaded through the audiocraft key map, against MusicgenMelodyForCausalLM holding the same
    weights under its own names (in_proj_weight split into q, k, v), fed the same prefix."""
    from transformers import MusicgenMelodyDecoderConfig, MusicgenMelodyForCausalLM

    state = style_ckpt[1]["state"]
    config = MusicgenMelodyDecoderConfig(vocab_size=CARD, hidden_size=DIM, num_hidden_layers=LAYERS,
                                         num_attention_heads=HEADS, ffn_dim=4 * DIM, num_codebooks=N_Q,
                                         pad_token_id=CARD, bos_token_id=CARD, max_position_embeddings=4096)
    ref = MusicgenMelodyForCausalLM(config).eval()
    theirs = {f"lm_heads.{k}.weight": state[f"linears.{k}.weight"] for k in range(N_Q)}
    theirs |= {f"model.decoder.embed_tokens.{k}.weight": state[f"emb.{k}.weight"] for k in range(N_Q)}
    theirs |= {"model.decoder.layer_norm.weight": state["out_norm.weight"],
               "model.decoder.layer_norm.bias": state["out_norm.bias"]}
    for i in range(LAYERS):
        a, t = f"transformer.layers.{i}.", f"model.decoder.layers.{i}."
        q, k, v = state[a + "self_attn.in_proj_weight"].chunk(3)
        theirs |= {t + "self_attn.q_proj.weight": q, t + "self_attn.k_proj.weight": k, t + "self_attn.v_proj.weight": v,
                   t + "self_attn.out_proj.weight": state[a + "self_attn.out_proj.weight"],
                   t + "fc1.weight": state[a + "linear1.weight"], t + "fc2.weight": state[a + "linear2.weight"]}
        for ours, name in (("norm1", "self_attn_layer_norm"), ("norm2", "final_layer_norm")):
            theirs |= {t + f"{name}.weight": state[a + f"{ours}.weight"], t + f"{name}.bias": state[a + f"{ours}.bias"]}
    missing, unexpected = ref.load_state_dict(theirs, strict=False)
    assert not unexpected and all("embed_positions" in m for m in missing)

    g = torch.Generator().manual_seed(1)
    B, S, T = 2, 5, 7
    style = torch.randn(B, 3, DIM, generator=g)
    text = torch.randn(B, S, 24, generator=g)
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1, 3:] = 0
    codes = torch.randint(0, CARD, (B, N_Q, T), generator=g)
    proj_w, proj_b = state["condition_provider.conditioners.description.output_proj.weight"], \
        state["condition_provider.conditioners.description.output_proj.bias"]
    prefix = torch.cat([style, (text @ proj_w.T + proj_b) * mask[..., None]], dim=1)  # [style | text]
    with torch.no_grad():
        expected = ref(input_ids=codes.reshape(B * N_Q, T), encoder_hidden_states=prefix).logits
        expected = expected.view(B, N_Q, -1, CARD)[:, :, -T:]  # [B, K, T, V] after the prefix

    lm = style_model._model.lm
    lm.set_condition(text, mask, style=style)
    lm.setup_cache(B, T)
    with torch.inference_mode():
        ours = lm(codes, torch.arange(T), T, with_prefix=True)
    assert ours.shape == expected.shape
    assert torch.allclose(ours, expected, atol=1e-4), (ours - expected).abs().max()


def reference_style_tokens(state, mert, excerpts: np.ndarray, eval_q: int) -> torch.Tensor:
    """The conditioner from its definition, on audiocraft's tensors: MERT at 24 kHz, linear, pre-norm
    transformer with sinusoidal positions, BatchNorm, RVQ over eval_q codebooks, every 15th frame, projection."""
    from tunesmith.audio.io import resample

    x24 = torch.from_numpy(resample(excerpts, SR, 24000))
    with torch.no_grad():
        h = mert(x24).last_hidden_state
    x = h @ state[W + "embed.weight"].T + state[W + "embed.bias"]
    T, D = x.shape[1:]
    half = D // 2
    phase = torch.arange(T)[:, None] / 10000 ** (torch.arange(half)[None] / (half - 1))
    x = x + torch.cat([phase.cos(), phase.sin()], dim=1)
    n_layers = len({k.split(".")[5] for k in state if k.startswith(W + "transformer.layers.")})
    for i in range(n_layers):
        p = f"{W}transformer.layers.{i}."
        y = F.layer_norm(x, (D,), state[p + "norm1.weight"], state[p + "norm1.bias"])
        q, k, v = (y @ state[p + "self_attn.in_proj_weight"].T).chunk(3, dim=-1)
        heads = lambda z: z.view(z.shape[0], T, 8, D // 8).transpose(1, 2)  # noqa: E731  xsmall: 8 heads
        att = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(D // 8), dim=-1) @ heads(v)
        x = x + att.transpose(1, 2).reshape(-1, T, D) @ state[p + "self_attn.out_proj.weight"].T
        y = F.layer_norm(x, (D,), state[p + "norm2.weight"], state[p + "norm2.bias"])
        x = x + F.gelu(y @ state[p + "linear1.weight"].T) @ state[p + "linear2.weight"].T
    x = (x - state[W + "batch_norm.running_mean"]) / torch.sqrt(state[W + "batch_norm.running_var"] + 1e-5)
    quantized, residual = torch.zeros_like(x), x
    for q in range(eval_q):
        book = state[f"{W}rvq.vq.layers.{q}._codebook.embed"]
        index = torch.cdist(residual.reshape(-1, D), book).argmin(dim=1).view(residual.shape[:2])
        quantized, residual = quantized + book[index], residual - book[index]
    return quantized[:, ::15] @ state[W + "output_proj.weight"].T + state[W + "output_proj.bias"]


@pytest.mark.parametrize("eval_q, seconds", [(3, 3.0), (1, 1.5), (6, 4.5)])
def test_style_conditioner_matches_its_definition(style_ckpt, style_model, eval_q, seconds):
    state, mert = style_ckpt[1]["state"], style_ckpt[1]["mert"]
    excerpts = np.stack([music(seconds, seed=1), music(seconds, seed=2)])
    expected = reference_style_tokens(state, mert, excerpts, eval_q)
    ours = style_model._model.style.tokens(excerpts, eval_q)
    assert ours.shape == expected.shape == (2, math.ceil(expected.shape[1]), DIM)
    assert ours.shape[1] == {3.0: 15, 1.5: 8, 4.5: 23}[seconds]  # 75 MERT frames a second, every 15th kept
    assert torch.allclose(ours, expected, atol=1e-4), (ours - expected).abs().max()


def test_fewer_quantizers_change_the_tokens(style_model):
    excerpts = music(3.0)[None]
    one, three = (style_model._model.style.tokens(excerpts, q) for q in (1, 3))
    assert not torch.allclose(one, three)


def test_mert_loads_a_checkpoint_with_legacy_weight_norm_names(style_ckpt, style_model):
    saved = torch.load(style_ckpt[0] / "mert" / "pytorch_model.bin", weights_only=True)
    assert any(k.endswith("weight_g") for k in saved) and not any("parametrizations" in k for k in saved)
    audio = torch.from_numpy(music(1.0)[None])
    with torch.no_grad():
        expected = style_ckpt[1]["mert"](audio).last_hidden_state
        ours = style_model._model.style.mert(audio).last_hidden_state
    assert torch.allclose(ours, expected, atol=1e-5)


def test_double_guidance_equals_three_separate_passes(style_model, monkeypatch):
    """generate_codes' three-row batch, against each row's own batch-1 forward combined by the formula."""
    from tunesmith.musicgen import generate as gen
    from tunesmith.musicgen.patterns import delay_offsets
    from tunesmith.musicgen.sampling import SamplingParams

    model = style_model._model
    lm, cfg_, beta = model.lm, 3.0, 5.0
    states, mask = model.text.encode(["calm lofi piano"])
    style = model.style.tokens(music(3.0)[None], 3)
    captured, real_sample = [], gen.sample
    monkeypatch.setattr(gen, "sample", lambda logits, *a: (captured.append(logits.clone()), real_sample(logits, *a))[1])
    params = SamplingParams(temperature=0, cfg=cfg_, cfg_beta=beta)
    n_frames = 5
    codes = gen.generate_codes(lm, states, mask, n_frames, params, torch.tensor([3]), style=style)
    offsets = delay_offsets(N_Q, 1)
    seq, _, _ = gen.layout(n_frames, codes, offsets, CARD)  # the whole delayed sequence behind BOS
    assert len(captured) == n_frames + max(offsets)

    rows = [(states, mask, style), (states, torch.zeros_like(mask), style),
            (states, torch.zeros_like(mask), torch.zeros_like(style))]  # text+style, style only, neither
    for i, mixed in enumerate(captured):
        logits = []
        for row_states, row_mask, row_style in rows:
            with torch.inference_mode():
                lm.set_condition(row_states, row_mask, style=row_style)
                lm.setup_cache(1, i + 2)
                logits.append(lm(seq[:, :, : i + 1], torch.arange(i + 1), i + 1, with_prefix=True)[:, :, -1])
        cond, only_style, uncond = logits
        expected = uncond + cfg_ * (only_style + beta * (cond - only_style) - uncond)
        assert torch.allclose(mixed, expected, atol=1e-4), (i, (mixed - expected).abs().max())


def test_guidance_rows_follow_text_and_style(style_model, monkeypatch):
    """Text and style: three rows; style alone or text alone: two (ordinary guidance)."""
    from tunesmith.musicgen import generate as gen

    seen = []
    real = gen.generate_codes
    monkeypatch.setattr("tunesmith.musicgen.longform.generate_codes",
                        lambda lm, s, m, n, params, *a, **k: (seen.append(params.rows), real(lm, s, m, n, params, *a, **k))[1])
    ref = (music(), SR)
    style_model.generate("calm lofi piano", style=ref, duration=0.1, seed=1, temperature=0)
    style_model.generate("", style=ref, duration=0.1, seed=1, temperature=0)
    style_model.generate(None, style=ref, duration=0.1, seed=1, temperature=0)
    style_model.generate("calm lofi piano", duration=0.1, seed=1, temperature=0)
    style_model.generate("calm lofi piano", style=ref, duration=0.1, seed=1, temperature=0, cfg=1)
    assert seen == [3, 2, 2, 2, 1]


def test_greedy_is_deterministic_and_other_styles_give_other_codes(style_model, monkeypatch):
    from tunesmith.musicgen import longform

    outputs, real = [], longform.generate_codes
    monkeypatch.setattr(longform, "generate_codes", lambda *a, **k: (outputs.append(real(*a, **k)), outputs[-1])[1])
    kwargs = dict(duration=0.4, seed=7, temperature=0, style_start=0.5)
    a = style_model.generate("deep house", style=(music(seed=1), SR), **kwargs)
    b = style_model.generate("deep house", style=(music(seed=1), SR), **kwargs)
    c = style_model.generate("deep house", style=(music(seed=9, base=660.0), SR), **kwargs)
    assert torch.equal(outputs[0], outputs[1]) and np.array_equal(a[0].audio, b[0].audio)
    assert not torch.equal(outputs[0], outputs[2]) and not np.array_equal(a[0].audio, c[0].audio)


def test_the_seed_picks_the_excerpt(style_model):
    ref = (music(8.0), SR)
    first = style_model.generate("jazz", style=ref, duration=0.1, seed=11, temperature=0, num_variations=2)
    again = style_model.generate("jazz", style=ref, duration=0.1, seed=11, temperature=0)
    other = style_model.generate("jazz", style=ref, duration=0.1, seed=12, temperature=0)
    starts = [c.params["style_start"] for c in first]
    assert again[0].params["style_start"] == starts[0] and other[0].params["style_start"] == starts[1]
    assert starts[0] != starts[1] and all(0 <= s <= 8.0 - 3.0 for s in starts)
    assert np.allclose(again[0].audio, first[0].audio, atol=1e-4)  # a variation is reproduced by its seed alone
    fixed = style_model.generate("jazz", style=ref, duration=0.1, seed=11, style_start=2.0, style_excerpt=2.0)
    assert fixed[0].params["style_start"] == 2.0 and fixed[0].params["style_excerpt"] == 2.0


def test_long_pieces_keep_the_same_style_tokens(style_model, monkeypatch):
    from tunesmith.musicgen import longform
    from tunesmith.musicgen.style import StyleModel

    calls, styles, real = [], [], longform.generate_codes
    monkeypatch.setattr(StyleModel, "tokens", lambda self, *a, real_tokens=StyleModel.tokens:
                        (calls.append(1), real_tokens(self, *a))[1])
    monkeypatch.setattr(longform, "generate_codes", lambda *a, **k: (styles.append(k["style"]), real(*a, **k))[1])
    style_model._window_seconds = 0.3
    try:
        clip = style_model.generate("ambient pads", style=(music(), SR), duration=0.7, context=0.1, seed=2)[0]
    finally:
        style_model._window_seconds = style_model.max_window
    assert len(calls) == 1 and len(styles) >= 3 and all(s is styles[0] for s in styles)
    assert clip.audio.shape[1] == int(0.7 * SR)


@pytest.mark.slow
def test_cli_writes_a_file_with_style_and_without_text(style_ckpt, tmp_path):
    ref = tmp_path / "reference.wav"
    sf.write(str(ref), music(4.0), SR)
    proc = run("generate", "calm lofi piano", "-m", style_ckpt[0], "--style", ref, "--cfg-beta", "4",
               "--style-excerpt", "2", "--style-quantizers", "2", "--style-start", "1", "-d", "0.2", "--seed", "3",
               "-o", tmp_path / "out.wav")
    assert proc.returncode == 0, proc.stderr
    assert sf.info(str(tmp_path / "out.wav")).frames == int(0.2 * SR)
    proc = run("generate", "-m", style_ckpt[0], "--style", ref, "-d", "0.2", "--seed", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr and (tmp_path / proc.stdout.strip()).exists()


def test_cli_bad_inputs_are_one_line(style_ckpt, tmp_path):
    short = tmp_path / "short.wav"
    sf.write(str(short), music(1.0), SR)
    assert "shorter than the 3 s excerpt" in one_error_line(
        run("generate", "x", "-m", style_ckpt[0], "--style", short, "-d", "0.1"))
    assert "--style-quantizers" in one_error_line(
        run("generate", "x", "-m", style_ckpt[0], "--style", short, "--style-quantizers", "7", "-d", "0.1"))
    assert "applies to a style reference" in one_error_line(
        run("generate", "x", "-m", style_ckpt[0], "--cfg-beta", "3", "-d", "0.1"))
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    one_error_line(run("generate", "x", "-m", style_ckpt[0], "--style", text, "-d", "0.1"))


def test_bad_inputs(style_model, mono_model):
    ref = (music(), SR)
    with pytest.raises(InvalidParameter, match="cannot take a style reference"):
        mono_model.generate("x", style=ref, duration=0.1)
    with pytest.raises(InvalidParameter, match="cannot follow a melody"):
        style_model.generate("x", melody=ref, duration=0.1)
    with pytest.raises(InvalidParameter, match="shorter than the 4.5 s excerpt"):
        style_model.generate("x", style=(music(2.0), SR), style_excerpt=4.5, duration=0.1)
    with pytest.raises(InvalidParameter, match="style_start"):
        style_model.generate("x", style=ref, style_start=4.0, duration=0.1)
    with pytest.raises(TunesmithError, match="silent"):
        style_model.generate("x", style=(np.zeros(5 * SR, np.float32), SR), duration=0.1)
    quiet_start = np.concatenate([np.zeros(3 * SR, np.float32), music(3.0)])
    with pytest.raises(InvalidParameter, match="excerpt at 0.00 s is silent"):
        style_model.generate("x", style=(quiet_start, SR), style_start=0.0, duration=0.1)
    for bad in (dict(style_excerpt=1.0), dict(style_excerpt=5), dict(style_quantizers=0), dict(style_quantizers=2.5),
                dict(cfg_beta=0.5), dict(cfg_beta=float("nan")), dict(style_start=-1)):
        with pytest.raises(InvalidParameter):
            style_model.generate("x", style=ref, duration=0.1, **bad)
    with pytest.raises(InvalidParameter, match="applies to a style reference"):
        style_model.generate("x", style_quantizers=2, duration=0.1)
    with pytest.raises(InvalidParameter, match="prompt is empty"):
        style_model.generate("", duration=0.1)


def test_damaged_or_foreign_checkpoints_are_refused(style_ckpt, tmp_path):
    import shutil

    from tunesmith.musicgen.loader import load_folder

    folder = tmp_path / "ckpt"
    shutil.copytree(style_ckpt[0], folder)
    pkg = torch.load(folder / "state_dict.bin", weights_only=True)
    del pkg["best_state"]["out_norm.bias"]
    torch.save(pkg, folder / "state_dict.bin")
    with pytest.raises(CheckpointError, match="out_norm.bias"):
        load_folder(folder, torch.device("cpu"), torch.float32)
    pkg["best_state"]["out_norm.bias"] = torch.zeros(DIM + 1)
    torch.save(pkg, folder / "state_dict.bin")
    with pytest.raises(CheckpointError, match="shape"):
        load_folder(folder, torch.device("cpu"), torch.float32)
    pkg["best_state"]["out_norm.bias"] = torch.zeros(DIM)
    pkg["xp.cfg"] = pkg["xp.cfg"].replace("model: style", "model: chroma_stem")
    torch.save(pkg, folder / "state_dict.bin")
    with pytest.raises(CheckpointError, match="without a style conditioner"):
        load_folder(folder, torch.device("cpu"), torch.float32)
    (folder / "state_dict.bin").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="damaged"):
        load_folder(folder, torch.device("cpu"), torch.float32)
