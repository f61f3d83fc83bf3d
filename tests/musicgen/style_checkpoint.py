"""A tiny random MusicGen-Style checkpoint in audiocraft's layout, built here (audiocraft cannot be
installed): state_dict.bin and compression_state_dict.bin with their xp.cfg, and the offline `t5/`
and `mert/` folders beside them. MERT is saved with legacy weight-norm names, as older checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from ..checkpoints import save_tokenizer, tiny_config

DIM, HEADS, LAYERS, N_Q, CARD = 32, 4, 2, 4, 1024  # 1024 codes: 10 bits, as transformers' EnCodec counts
STYLE_DIM, STYLE_LAYERS, STYLE_Q, STYLE_BINS = 256, 4, 6, 64  # audiocraft's "xsmall" style transformer


def lm_yaml() -> str:
    cfg = {
        "sample_rate": 32000, "channels": 1, "lm_model": "transformer_lm",
        "codebooks_pattern": {"modeling": "delay", "delay": {"delays": list(range(N_Q)), "flatten_first": 0}},
        "transformer_lm": {"dim": DIM, "num_heads": HEADS, "num_layers": LAYERS, "hidden_scale": 4, "n_q": N_Q,
                           "card": CARD, "activation": "gelu", "norm_first": True, "bias_ff": False,
                           "bias_attn": False, "bias_proj": False, "layer_scale": None, "positional_embedding": "sin",
                           "norm": "layer_norm", "memory_efficient": True},
        "classifier_free_guidance": {"training_dropout": 0.1, "inference_coef": 3.0},
        "fuser": {"cross_attention_pos_emb": False, "sum": [], "prepend": ["self_wav", "description"], "cross": [],
                  "input_interpolate": []},
        "conditioners": {
            "self_wav": {"model": "style", "style": {
                "model_name": "mert", "transformer_scale": "xsmall", "sample_rate": "${sample_rate}",
                "length": 3.0, "ds_factor": 15, "n_q_out": STYLE_Q, "eval_q": 3, "bins": STYLE_BINS,
                "batch_norm": True, "num_codebooks_lm": "${transformer_lm.n_q}"}},
            "description": {"model": "t5", "t5": {"name": "t5-base", "finetune": False}},
        },
    }
    return yaml.safe_dump(cfg)


def codec_yaml() -> str:
    cfg = {"sample_rate": 32000, "channels": 1,
           "encodec": {"sample_rate": "${sample_rate}", "channels": "${channels}", "causal": False,
                       "renormalize": False},
           "seanet": {"dimension": 16, "channels": "${channels}", "causal": "${encodec.causal}", "n_filters": 4,
                      "n_residual_layers": 1, "ratios": [8, 5, 4, 4], "norm": "weight_norm", "kernel_size": 7,
                      "residual_kernel_size": 3, "last_kernel_size": 7, "dilation_base": 2, "pad_mode": "constant",
                      "true_skip": True, "compress": 2, "lstm": 1, "decoder": {"trim_right_ratio": 1.0}},
           "rvq": {"n_q": N_Q, "bins": CARD}}
    return yaml.safe_dump(cfg)


def codec_reference():
    """The transformers EncodecModel that codec_yaml describes, with random codebooks."""
    from transformers import EncodecConfig, EncodecModel

    config = EncodecConfig(hidden_size=16, num_filters=4, codebook_size=CARD, codebook_dim=16,
                           upsampling_ratios=[8, 5, 4, 4], sampling_rate=32000, audio_channels=1,
                           num_residual_layers=1, target_bandwidths=[2.0], chunk_length_s=None, overlap=None,
                           normalize=False, use_causal_conv=False, num_lstm_layers=1, use_conv_shortcut=False,
                           pad_mode="constant")
    codec = EncodecModel(config).eval()
    with torch.no_grad():
        for layer in codec.quantizer.layers:
            layer.codebook.embed.normal_(0, 1)
    return codec


def legacy_weight_norm(key: str) -> str:
    return key.replace("parametrizations.weight.original0", "weight_g").replace(
        "parametrizations.weight.original1", "weight_v")


def audiocraft_codec_state(codec) -> dict:
    """transformers' EncodecModel names -> audiocraft's SEANet / RVQ names, written out by hand."""
    from transformers.models.encodec.modeling_encodec import EncodecConvTranspose1d

    out = {}
    for key, value in codec.state_dict().items():
        parts = legacy_weight_norm(key).split(".")
        if parts[0] == "quantizer":  # quantizer.layers.q.codebook.x -> quantizer.vq.layers.q._codebook.x
            new = ["quantizer", "vq", "layers", parts[2], "_codebook", *parts[4:]]
        else:
            side, index, rest = parts[0], parts[2], parts[3:]
            module = getattr(codec, side).layers[int(index)]
            if rest[0] == "conv":
                kind = "convtr" if isinstance(module, EncodecConvTranspose1d) else "conv"
                rest = [kind, kind, *rest[1:]]
            elif rest[0] in ("block", "shortcut"):
                j = 2 if rest[0] == "block" else 1
                rest = [*rest[:j], "conv", "conv", *rest[j + 1:]]
            new = [side, "model", index, *rest]
        out[".".join(new)] = value.clone()
    return out


def mert_reference(seed: int = 0):
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(seed)
    config = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                          conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                          feat_extract_norm="group", do_stable_layer_norm=False)
    return HubertModel(config).eval()


def save_mert(folder: Path, mert):
    import json

    folder.mkdir(parents=True, exist_ok=True)
    raw = mert.config.to_dict()
    raw.update(model_type="mert_model", architectures=["MERTModel"], feature_extractor_cqt=False, deepnorm=False,
               attention_relax=-1.0)
    (folder / "config.json").write_text(json.dumps(raw))
    torch.save({legacy_weight_norm(k): v.clone() for k, v in mert.state_dict().items()}, folder / "pytorch_model.bin")


def lm_state(seed: int) -> dict:
    """Random weights under audiocraft's names: LM, text projection, style conditioner."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, std=0.3: torch.randn(*shape, generator=g) * std  # noqa: E731
    s = {f"emb.{k}.weight": r(CARD + 1, DIM, std=1.0) for k in range(N_Q)}
    s |= {f"linears.{k}.weight": r(CARD, DIM) for k in range(N_Q)}
    s |= {"out_norm.weight": 1 + r(DIM, std=0.1), "out_norm.bias": r(DIM, std=0.1)}
    for i in range(LAYERS):
        p = f"transformer.layers.{i}."
        s |= {p + "self_attn.in_proj_weight": r(3 * DIM, DIM), p + "self_attn.out_proj.weight": r(DIM, DIM),
              p + "linear1.weight": r(4 * DIM, DIM), p + "linear2.weight": r(DIM, 4 * DIM)}
        for n in ("norm1", "norm2"):
            s |= {p + n + ".weight": 1 + r(DIM, std=0.1), p + n + ".bias": r(DIM, std=0.1)}
    t = "condition_provider.conditioners.description."
    s |= {t + "output_proj.weight": r(DIM, 24), t + "output_proj.bias": r(DIM, std=0.1)}
    w = "condition_provider.conditioners.self_wav."
    s |= {w + "embed.weight": r(STYLE_DIM, 32), w + "embed.bias": r(STYLE_DIM, std=0.1),
          w + "output_proj.weight": r(DIM, STYLE_DIM, std=0.1), w + "output_proj.bias": r(DIM, std=0.1),
          w + "batch_norm.running_mean": r(STYLE_DIM, std=0.5), w + "batch_norm.running_var": 0.5 + r(STYLE_DIM).abs(),
          w + "batch_norm.num_batches_tracked": torch.tensor(1000)}
    for i in range(STYLE_LAYERS):
        p = f"{w}transformer.layers.{i}."
        s |= {p + "self_attn.in_proj_weight": r(3 * STYLE_DIM, STYLE_DIM, std=0.05),
              p + "self_attn.out_proj.weight": r(STYLE_DIM, STYLE_DIM, std=0.05),
              p + "linear1.weight": r(4 * STYLE_DIM, STYLE_DIM, std=0.05),
              p + "linear2.weight": r(STYLE_DIM, 4 * STYLE_DIM, std=0.05)}
        for n in ("norm1", "norm2"):
            s |= {p + n + ".weight": 1 + r(STYLE_DIM, std=0.1), p + n + ".bias": r(STYLE_DIM, std=0.1)}
    for q in range(STYLE_Q):
        p = f"{w}rvq.vq.layers.{q}._codebook."
        embed = r(STYLE_BINS, STYLE_DIM, std=1.0 / (q + 1))
        s |= {p + "inited": torch.tensor([1.0]), p + "cluster_size": torch.ones(STYLE_BINS), p + "embed": embed,
              p + "embed_avg": embed.clone()}
    return s


def save_style_checkpoint(folder: Path, seed: int = 0) -> dict:
    """-> the pieces a test compares against: {"state", "codec", "mert", "t5"}."""
    from transformers import T5EncoderModel

    folder.mkdir(parents=True, exist_ok=True)
    state = lm_state(seed)
    torch.save({"best_state": state, "xp.cfg": lm_yaml(), "version": "1.4.0a2", "exported": True},
               folder / "state_dict.bin")
    torch.manual_seed(seed)
    codec = codec_reference()
    torch.save({"best_state": audiocraft_codec_state(codec), "xp.cfg": codec_yaml(), "version": "1.4.0a2",
                "exported": True}, folder / "compression_state_dict.bin")
    t5 = T5EncoderModel(tiny_config().text_encoder).eval()
    t5.save_pretrained(str(folder / "t5"))
    save_tokenizer(folder / "t5")
    mert = mert_reference(seed)
    save_mert(folder / "mert", mert)
    return {"state": state, "codec": codec, "mert": mert, "t5": t5}
