"""Tiny random Stable Audio Open checkpoints, built offline: a T5 with its own small tokenizer and a
diffusers StableAudioPipeline saved with save_pretrained (the 1.0 layout)."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("rain on a tin roof distant thunder tech house drum loop punchy kick warm ambient pad slow "
         "dusty vinyl hip hop beat music noise").split()
T5_DIM = 32
MAX_TOKENS = 16


def save_tiny_t5(folder: Path, seed: int = 0, **sizes) -> Path:
    """A T5 encoder of width T5_DIM (or `sizes`, T5Config's) and a unigram tokenizer over WORDS, in the
    transformers layout."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"\u2581{w}", -1.0) for w in WORDS]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz\u2581"]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                model_max_length=MAX_TOKENS, extra_ids=0)
    torch.manual_seed(seed)
    sizes = sizes or dict(d_model=T5_DIM, d_kv=8, d_ff=48, num_layers=2, num_heads=4, relative_attention_num_buckets=8)
    config = T5Config(vocab_size=len(vocab), decoder_start_token_id=0, **sizes)
    model = T5EncoderModel(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_pipeline(seed: int = 0, sample_size: int = 256):
    """A StableAudioPipeline with tiny random parts (about diffusers' own test sizes, a T5 of our own).
    The VAE makes 4 kHz stereo, 8 samples per latent frame: 256 frames last 0.512 s."""
    import tempfile

    from diffusers import (AutoencoderOobleck, CosineDPMSolverMultistepScheduler, StableAudioDiTModel,
                           StableAudioPipeline, StableAudioProjectionModel)
    from transformers import T5EncoderModel, T5TokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        save_tiny_t5(Path(tmp), seed)
        text_encoder = T5EncoderModel.from_pretrained(tmp)
        tokenizer = T5TokenizerFast.from_pretrained(tmp)
    torch.manual_seed(seed)
    transformer = StableAudioDiTModel(sample_size=sample_size, in_channels=3, num_layers=2, attention_head_dim=4,
                                      num_key_value_attention_heads=2, out_channels=3, cross_attention_dim=4,
                                      time_proj_dim=8, global_states_input_dim=8, cross_attention_input_dim=4,
                                      num_attention_heads=2)
    torch.manual_seed(seed + 1)
    vae = AutoencoderOobleck(encoder_hidden_size=6, downsampling_ratios=[2, 4], decoder_channels=3,
                             decoder_input_channels=3, audio_channels=2, channel_multiples=[2, 4], sampling_rate=4000)
    torch.manual_seed(seed + 2)
    projection = StableAudioProjectionModel(text_encoder_dim=T5_DIM, conditioning_dim=4, min_value=0, max_value=32)
    scheduler = CosineDPMSolverMultistepScheduler(solver_order=2, prediction_type="v_prediction", sigma_data=1.0,
                                                  sigma_schedule="exponential")
    return StableAudioPipeline(vae=vae, text_encoder=text_encoder, projection_model=projection, tokenizer=tokenizer,
                               transformer=transformer, scheduler=scheduler)


def save_tiny_pipeline(folder: Path, seed: int = 0, sample_size: int = 256):
    """-> the pipeline, saved in the diffusers layout (model_index.json and one folder per part)."""
    pipe = tiny_pipeline(seed, sample_size)
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe


# --- the stable-audio-tools layout (stable-audio-open-small): model_config.json + model.safetensors ---

def tiny_tools_config() -> dict:
    """The structure of stable-audio-open-small's model_config.json at tiny sizes: 4 kHz stereo, 8 samples
    per latent frame (256 frames = 0.512 s); heads of 64 (stable-audio-tools rotates max(64 // 2, 32) dims)."""
    oobleck = {"c_mults": [1, 2], "strides": [2, 4], "use_snake": True}
    return {
        "model_type": "diffusion_cond", "sample_size": 2048, "sample_rate": 4000, "audio_channels": 2,
        "model": {
            "pretransform": {"type": "autoencoder", "iterate_batch": True, "config": {
                "encoder": {"type": "oobleck", "config": {"in_channels": 2, "channels": 8, "latent_dim": 8, **oobleck}},
                "decoder": {"type": "oobleck", "config": {"out_channels": 2, "channels": 6, "latent_dim": 4,
                                                          "final_tanh": False, **oobleck}},
                "bottleneck": {"type": "vae"}, "latent_dim": 4, "downsampling_ratio": 8, "io_channels": 2}},
            "conditioning": {"configs": [
                {"id": "prompt", "type": "t5", "config": {"t5_model_name": "t5", "max_length": MAX_TOKENS}},
                {"id": "seconds_total", "type": "number", "config": {"min_val": 0, "max_val": 256}}],
                "cond_dim": T5_DIM},
            "diffusion": {
                "cross_attention_cond_ids": ["prompt", "seconds_total"], "global_cond_ids": ["seconds_total"],
                "type": "dit", "diffusion_objective": "rf_denoiser",
                "config": {"io_channels": 4, "embed_dim": 128, "depth": 2, "num_heads": 2, "cond_token_dim": T5_DIM,
                           "global_cond_dim": T5_DIM, "transformer_type": "continuous_transformer",
                           "attn_kwargs": {"qk_norm": "ln"}}},
            "io_channels": 4}}


def tools_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of a stable-audio-tools ConditionedDiffusionModelWrapper state dict, written from its module
    definitions (DiffusionTransformer, ContinuousTransformer, OobleckEncoder/Decoder, NumberConditioner)."""
    model = config["model"]
    dit = model["diffusion"]["config"]
    E, io, C, G = dit["embed_dim"], dit["io_channels"], dit["cond_token_dim"], dit["global_cond_dim"]
    hd, ctx = E // dit["num_heads"], E  # project_cond_tokens: the cross-attention context is embed_dim wide
    rot = max(hd // 2, 32)
    s = {"timestep_features.weight": (128, 1), "to_timestep_embed.0.weight": (E, 256), "to_timestep_embed.0.bias": (E,),
         "to_timestep_embed.2.weight": (E, E), "to_timestep_embed.2.bias": (E,), "to_cond_embed.0.weight": (ctx, C),
         "to_cond_embed.2.weight": (ctx, ctx), "to_global_embed.0.weight": (E, G), "to_global_embed.2.weight": (E, E),
         "preprocess_conv.weight": (io, io, 1), "postprocess_conv.weight": (io, io, 1),
         "transformer.project_in.weight": (E, io), "transformer.project_out.weight": (io, E),
         "transformer.rotary_pos_emb.inv_freq": (rot // 2,)}
    for i in range(dit["depth"]):
        p = f"transformer.layers.{i}."
        for norm in ("pre_norm", "cross_attend_norm", "ff_norm"):
            s[p + norm + ".gamma"] = s[p + norm + ".beta"] = (E,)
        s |= {p + "self_attn.to_qkv.weight": (3 * E, E), p + "self_attn.to_out.weight": (E, E),
              p + "cross_attn.to_q.weight": (E, E), p + "cross_attn.to_kv.weight": (2 * ctx, ctx),
              p + "cross_attn.to_out.weight": (E, E), p + "ff.ff.0.proj.weight": (8 * E, E),
              p + "ff.ff.0.proj.bias": (8 * E,), p + "ff.ff.2.weight": (E, 4 * E), p + "ff.ff.2.bias": (E,)}
        for attn in ("self_attn", "cross_attn"):
            for name in ("q_norm.weight", "q_norm.bias", "k_norm.weight", "k_norm.bias"):
                s[f"{p}{attn}.{name}"] = (hd,)
    shapes = {"model.model." + k: v for k, v in s.items()}
    for c in model["conditioning"]["configs"]:
        if c["type"] == "number":
            p = f"conditioner.conditioners.{c['id']}.embedder.embedding."
            cond = model["conditioning"]["cond_dim"]
            shapes |= {p + "0.weights": (128,), p + "1.weight": (cond, 257), p + "1.bias": (cond,)}
    ae = model["pretransform"]["config"]
    return shapes | {"pretransform.model." + k: v for k, v in _oobleck_shapes(ae).items()}


def _oobleck_shapes(ae: dict) -> dict[str, tuple[int, ...]]:
    enc, dec = ae["encoder"]["config"], ae["decoder"]["config"]
    s = {}

    def conv(name, c_out, c_in, k, bias=True, transposed=False):  # torch weight_norm over dim 0
        s[name + ".weight_g"] = (c_in if transposed else c_out, 1, 1)
        s[name + ".weight_v"] = (c_in, c_out, k) if transposed else (c_out, c_in, k)
        if bias:
            s[name + ".bias"] = (c_out,)

    def snake(name, c):
        s[name + ".alpha"] = s[name + ".beta"] = (c,)

    def res_unit(name, c):
        snake(name + ".layers.0", c), conv(name + ".layers.1", c, c, 7)
        snake(name + ".layers.2", c), conv(name + ".layers.3", c, c, 1)

    ch, mults, strides, n = enc["channels"], [1] + enc["c_mults"], enc["strides"], len(enc["strides"])
    conv("encoder.layers.0", ch, enc["in_channels"], 7)
    for i in range(n):
        p, c_in = f"encoder.layers.{i + 1}.layers", mults[i] * ch
        for u in range(3):
            res_unit(f"{p}.{u}", c_in)
        snake(f"{p}.3", c_in), conv(f"{p}.4", mults[i + 1] * ch, c_in, 2 * strides[i])
    snake(f"encoder.layers.{n + 1}", mults[-1] * ch), conv(f"encoder.layers.{n + 2}", enc["latent_dim"], mults[-1] * ch, 3)
    ch = dec["channels"]
    conv("decoder.layers.0", mults[-1] * ch, dec["latent_dim"], 7)
    for j, i in enumerate(range(n, 0, -1)):  # DecoderBlock(c_mults[i] -> c_mults[i - 1], strides[i - 1])
        p, c_in, c_out = f"decoder.layers.{j + 1}.layers", mults[i] * ch, mults[i - 1] * ch
        snake(f"{p}.0", c_in), conv(f"{p}.1", c_out, c_in, 2 * strides[i - 1], transposed=True)
        for u in range(3):
            res_unit(f"{p}.{u + 2}", c_out)
    snake(f"decoder.layers.{n + 1}", ch), conv(f"decoder.layers.{n + 2}", dec["out_channels"], ch, 7, bias=False)
    return s


def tools_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the right shapes and sensible scales, in stable-audio-tools' key names."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in tools_shapes(config).items():
        x = torch.randn(shape, generator=gen)
        if key.endswith("inv_freq"):
            rot = 2 * shape[0]
            x = 1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))
        elif key.endswith((".gamma", "norm.weight")):
            x = 1 + 0.1 * x
        elif key.endswith((".beta", "norm.bias", ".alpha", ".bias")):
            x = 0.1 * x
        elif key.endswith(".weight_g"):
            x = 0.2 + 0.2 * x.abs()  # gains below 1: the residual stacks of the VAE stay O(1)
        elif x.dim() >= 2 and not key.endswith("weight_v"):
            x = x / x[0].numel() ** 0.5  # fan-in scaling keeps activations O(1) through the stack
        state[key] = x.contiguous()
    return state


def save_tiny_tools_checkpoint(folder: Path, seed: int = 0, config: dict | None = None,
                               t5_sizes: dict | None = None) -> dict[str, torch.Tensor]:
    """model_config.json, model.safetensors and a random T5 in the folder the config names (tiny: t5/).
    -> the state dict. config, t5_sizes: other sizes (the benchmarks' real ones)."""
    import json

    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = config or tiny_tools_config()
    (folder / "model_config.json").write_text(json.dumps(config, indent=2))
    state = tools_state_dict(config, seed)
    save_file(state, str(folder / "model.safetensors"))
    t5_name = config["model"]["conditioning"]["configs"][0]["config"]["t5_model_name"]
    save_tiny_t5(folder / t5_name, seed, **(t5_sizes or {}))
    return state
