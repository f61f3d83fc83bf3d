"""Stable Audio 3 in Stability's layout: model_config.json + model.safetensors (the DiT under model.model.*,
the SAME autoencoder under pretransform.model.*, the conditioners under conditioner.*), the T5Gemma text
encoder in a folder of its own. Every tensor is placed by an explicit name map and its shape checked.

    Stability (model.safetensors)                         tunesmith / diffusers module
    model.model.transformer.layers.{i}.*                 transformer_blocks.{i}.*  (ff.ff.0.proj -> ff.proj_in,
                                                           ff.ff.2 -> ff.proj_out; differential to_qkv rows
                                                           [q k v q2 k2] -> [q q2 k k2 v])
    model.model.transformer.{project_in,project_out}     proj_in, proj_out
    model.model.transformer.{memory_tokens,global_cond_embedder.*,rotary_pos_emb.inv_freq}  the same names
    model.model.{to_timestep_embed,to_cond_embed,to_global_embed,preprocess_conv,postprocess_conv}.*  the same
    conditioner.conditioners.prompt.padding_embedding     prompt_padding_embedding
    conditioner.conditioners.seconds_total.embedder.embedding.1.*   the duration embedder's linear.*
    pretransform.model.encoder.layers.{0, 2}             the encoder's resampling block, its projection
    pretransform.model.decoder.layers.{1, 3}             the decoder's projection, its resampling block
      ... .transformers.{j}.{pre_norm, self_attn, ff_norm, ff.ff.0.proj, ff.ff.2}
                                                         ... .transformers.{j}.{norm_attn, attn, norm_ff,
                                                           ff.proj_in, ff.proj_out}
    pretransform.model.bottleneck.{scaling_factor, bias, running_std}   bottleneck.{scale, bias, running_std}
    pretransform.model.*.transformers.{j}.rope.inv_freq  shape-checked; the layers compute the same frequencies
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from ..diffusion.folder import load_part
from ..errors import CheckpointError, TunesmithError
from ..hub import beside_or_hub
from .parts import StableAudio3Config, StableAudio3Parts
from .same_s import AutoencoderSAMES, SAMESConfig

log = logging.getLogger("tunesmith")

CONFIG, WEIGHTS = "model_config.json", "model.safetensors"
T5GEMMA_FOLDER, T5GEMMA_REPO = "t5gemma-b-b-ul2", "google/t5gemma-b-b-ul2"
DIT, AE, COND = "model.model.", "pretransform.model.", "conditioner.conditioners."
PINGPONG_STEPS, EULER_STEPS = 8, 100  # as for diffusers folders
# in the checkpoint, not read: SAME's noise scale (for noise_augment_dim, 0 in SA3) and the T5Gemma copy
# some checkpoints carry inside (the text encoder comes from its own folder)
UNUSED = (AE + "bottleneck.noise_scaling_factor", COND + "prompt.model.")


def read_raw_config(folder: Path) -> dict:
    try:
        return json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{folder / CONFIG} cannot be read ({err})") from None


def is_stable_audio3(folder: Path) -> bool:
    """A Stability-layout folder whose text conditioner is T5Gemma: Stable Audio 3 (Open's is T5)."""
    if not (folder / CONFIG).is_file():
        return False
    try:
        configs = read_raw_config(folder)["model"]["conditioning"]["configs"]
        return any(c.get("type") == "t5gemma" for c in configs)
    except (CheckpointError, KeyError, TypeError, AttributeError):
        return False


def _section(raw: dict, *keys: str, folder: Path):
    value = raw
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise CheckpointError(f"{folder / CONFIG} lacks {'.'.join(keys)}")
        value = value[key]
    return value


def _conditioner(raw: dict, type_: str, folder: Path) -> dict:
    configs = _section(raw, "model", "conditioning", "configs", folder=folder)
    found = next((c for c in configs if c.get("type") == type_), None)
    if found is None:
        raise CheckpointError(f"{folder / CONFIG} has no {type_} conditioner")
    return found


def read_config(folder: Path) -> tuple[StableAudio3Config, dict]:
    """(the model's sizes and defaults, the autoencoder's config) from model_config.json alone."""
    raw = read_raw_config(folder)
    ae = _section(raw, "model", "pretransform", "config", folder=folder)
    encoder = _section(ae, "encoder", "config", folder=folder)
    diffusion = _section(raw, "model", "diffusion", folder=folder)
    objective = diffusion.get("diffusion_objective")
    dit = diffusion.get("config") or {}
    if dit.get("timestep_features_logsnr") or dit.get("timestep_features_type", "expo") != "expo":
        raise CheckpointError(f"{folder / CONFIG}: the DiT reads its time step in a way Stable Audio 3's checkpoints "
                              "do not (timestep_features_logsnr or non-expo features)")
    seconds = _conditioner(raw, "number", folder).get("config", {})
    prompt = _conditioner(raw, "t5gemma", folder).get("config", {})
    sample_rate = int(raw.get("sample_rate", 44100))
    chunked = encoder.get("sliding_window") is None
    stride = int(encoder.get("strides", [16])[0])
    longest = raw["sample_size"] / sample_rate if "sample_size" in raw else float(seconds.get("max_val", 384))
    post_trained = objective == "rf_denoiser"  # base checkpoints are "rectified_flow"
    config = StableAudio3Config(
        sample_rate=sample_rate, hop=int(ae.get("downsampling_ratio", 4096)),
        latent_dim=int(ae.get("latent_dim", encoder.get("latent_dim", 256))),
        audio_channels=int(ae.get("io_channels", 2)), longest=float(longest),
        sampler="pingpong" if post_trained else "euler", steps=PINGPONG_STEPS if post_trained else EULER_STEPS,
        text_tokens=int(prompt.get("max_length", 256)),
        latent_multiple=int(encoder.get("chunk_size", 128)) // stride if chunked else 1)
    return config, ae


def checkpoint_limits(folder: Path) -> tuple[float, bool]:
    return read_config(folder)[0].longest, False


def checkpoint_shapes(folder: Path) -> dict[str, tuple]:
    """Every tensor's shape from model.safetensors' header alone (no weight read): what adapters are checked
    against before the model loads."""
    from ..lora import safetensors_header

    try:
        header = safetensors_header(folder / WEIGHTS, "checkpoint")
    except TunesmithError as err:
        raise CheckpointError(str(err)) from None
    return {name: tuple(entry["shape"]) for name, entry in header.items()
            if isinstance(entry, dict) and "shape" in entry}


class _Weights:
    """The checkpoint's tensors, each taken once by name with its shape checked; what is left at the end
    is reported (a checkpoint of another layout or size fails here, with the first name that differs)."""

    def __init__(self, folder: Path):
        from safetensors.torch import load_file

        try:
            self.tensors = load_file(str(folder / WEIGHTS))
        except Exception as err:  # a truncated or foreign file
            raise CheckpointError(f"{folder / WEIGHTS} cannot be read ({str(err).splitlines()[0]})") from None
        self.folder = folder
        self.used: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self.tensors

    def take(self, name: str, shape: torch.Size | tuple) -> torch.Tensor:
        tensor = self.tensors.get(name)
        if tensor is None:
            raise CheckpointError(f"{self.folder / WEIGHTS} lacks {name}")
        if tuple(tensor.shape) != tuple(shape):
            raise CheckpointError(f"{self.folder / WEIGHTS}: {name} has shape {tuple(tensor.shape)}, "
                                  f"expected {tuple(shape)}")
        self.used.add(name)
        return tensor.float()

    def fill(self, module: nn.Module, source_of, convert=lambda target, tensor: tensor, optional=()):
        """Every parameter and persistent buffer of `module` from the tensor source_of(its name) names."""
        state = {}
        for target, current in module.state_dict().items():
            source = source_of(target)
            if target in optional and not self.has(source):
                state[target] = current
                continue
            state[target] = convert(target, self.take(source, current.shape))
        module.load_state_dict(state, strict=True)

    def left(self, prefixes: tuple[str, ...]):
        unused = [n for n in self.tensors if n.startswith(prefixes) and n not in self.used
                  and not n.startswith(UNUSED)]
        if unused:
            raise CheckpointError(f"{self.folder / WEIGHTS} holds {len(unused)} tensor(s) this model does not "
                                  f"have, e.g. {sorted(unused)[0]}")


def reorder_differential(rows: torch.Tensor) -> torch.Tensor:
    """Stability's fused differential projection [q k v q2 k2] -> diffusers' [q q2 k k2 v] (by rows)."""
    q, k, v, q2, k2 = rows.chunk(5, dim=0)
    return torch.cat([q, q2, k, k2, v], dim=0)


def _block_source(local: str) -> str:
    """A transformer layer's diffusers names -> Stability's (DiT and SAME alike)."""
    for ours, theirs in (("ff.proj_in.", "ff.ff.0.proj."), ("ff.proj_out.", "ff.ff.2."), ("norm_attn.", "pre_norm."),
                         ("attn.", "self_attn."), ("norm_ff.", "ff_norm.")):
        if local.startswith(ours):
            return theirs + local[len(ours):]
    return local


def dit_source(target: str) -> str:
    """diffusers StableAudio3DiTModel name -> Stability name."""
    if target == "prompt_padding_embedding":
        return COND + "prompt.padding_embedding"
    if target.startswith("transformer_blocks."):
        _, index, local = target.split(".", 2)
        for ours, theirs in (("ff.proj_in.", "ff.ff.0.proj."), ("ff.proj_out.", "ff.ff.2.")):
            if local.startswith(ours):
                local = theirs + local[len(ours):]
        return f"{DIT}transformer.layers.{index}.{local}"
    if target in ("proj_in.weight", "proj_out.weight"):
        return f"{DIT}transformer.project_{target[5:]}"
    if target.startswith(("memory_tokens", "global_cond_embedder.", "rotary_pos_emb.")):
        return f"{DIT}transformer.{target}"
    return DIT + target


def same_source(target: str, levels: int = 1) -> str:
    """SAME module name (tunesmith's SAME-S or diffusers' AutoencoderSAME) -> Stability name."""
    head, _, rest = target.partition(".")
    if head == "bottleneck":
        return AE + "bottleneck." + {"scale": "scaling_factor"}.get(rest, rest)
    if head in ("encoder_proj", "decoder_proj"):  # tunesmith's SAME-S
        side = head.split("_")[0]
        return f"{AE}{side}.layers.{levels + 1 if side == 'encoder' else 1}.{rest}"
    if head in ("encoder_block", "decoder_block"):
        side, index = head.split("_")[0], 0
    else:  # diffusers: encoder.blocks.{i}.*, encoder.proj.*, decoder.proj.*, decoder.blocks.{i}.*
        side = head
        if rest.startswith("proj."):
            return f"{AE}{side}.layers.{levels + 1 if side == 'encoder' else 1}.{rest[5:]}"
        _, index, rest = rest.split(".", 2)
        index = int(index)
    layer = index if side == "encoder" else 3 + index
    if rest.startswith("transformers."):
        _, j, local = rest.split(".", 2)
        rest = f"transformers.{j}.{_block_source(local)}"
    return f"{AE}{side}.layers.{layer}.{rest}"


def dit_config(t: dict[str, tuple], folder: Path) -> dict:
    """StableAudio3DiTModel's sizes from the shapes of the checkpoint's tensors (name -> shape)."""

    def shape(name: str) -> tuple:
        if name not in t:
            raise CheckpointError(f"{folder / WEIGHTS} lacks {name}")
        return tuple(t[name])

    embed_dim, features = shape(DIT + "to_timestep_embed.0.weight")
    head_dim = shape(DIT + "transformer.layers.0.self_attn.q_norm.gamma")[0]
    depth = 0
    while DIT + f"transformer.layers.{depth}.pre_norm.gamma" in t:
        depth += 1
    return dict(io_channels=shape(DIT + "preprocess_conv.weight")[0], embed_dim=embed_dim, depth=depth,
                num_heads=embed_dim // head_dim, cond_token_dim=shape(DIT + "to_cond_embed.0.weight")[1],
                global_cond_dim=shape(DIT + "to_global_embed.0.weight")[1],
                local_add_cond_dim=shape(DIT + "transformer.layers.0.to_local_embed.0.weight")[1],
                timestep_features_dim=features,
                ff_mult=shape(DIT + "transformer.layers.0.ff.ff.0.proj.weight")[0] / (2 * embed_dim),
                num_memory_tokens=shape(DIT + "transformer.memory_tokens")[0],
                use_differential_attention=shape(DIT + "transformer.layers.0.self_attn.to_qkv.weight")[0]
                == 5 * embed_dim)


def _load_dit(weights: _Weights) -> nn.Module:
    from diffusers import StableAudio3DiTModel

    sizes = dit_config({name: tuple(t.shape) for name, t in weights.tensors.items()}, weights.folder)
    dit = StableAudio3DiTModel(**sizes)
    differential = sizes["use_differential_attention"]

    def convert(target: str, tensor: torch.Tensor) -> torch.Tensor:
        return reorder_differential(tensor) if differential and target.endswith("self_attn.to_qkv.weight") else tensor

    weights.fill(dit, dit_source, convert, optional=("rotary_pos_emb.inv_freq",))
    return dit


def _fold_weight_norm(g: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """weight_norm's weight (over dim 0): g * v / |v|, the norm over all but the output channels."""
    return g * v / v.flatten(1).norm(dim=1).reshape(-1, *([1] * (v.dim() - 1)))


def _load_same(weights: _Weights, ae: dict, sample_rate: int) -> nn.Module:
    """SAME-S (chunked attention) as tunesmith's AutoencoderSAMES; SAME-L (a sliding window) as diffusers'
    AutoencoderSAME."""
    encoder, decoder = ae["encoder"]["config"], ae["decoder"]["config"]
    if len(encoder.get("strides", [16])) != 1:
        raise CheckpointError(f"{weights.folder / CONFIG}: a SAME autoencoder of {len(encoder['strides'])} "
                              "resampling levels is not one Stable Audio 3 has")
    stride, width = int(encoder["strides"][0]), int(encoder["channels"]) * int(encoder["c_mults"][0])
    patch = int(ae.get("downsampling_ratio", 4096)) // stride
    common = dict(latent_dim=int(ae.get("latent_dim", encoder.get("latent_dim", 256))),
                  dim_heads=int(encoder.get("dim_heads", 64)), ff_mult=int(encoder.get("ff_mult", 3)))
    if encoder.get("sliding_window") is not None:
        from diffusers import AutoencoderSAME

        vae = AutoencoderSAME(audio_channels=int(ae.get("io_channels", 2)), patch_size=patch,
                              encoder_channels=int(encoder["channels"]), encoder_c_mults=encoder["c_mults"],
                              encoder_strides=[stride], encoder_transformer_depths=encoder["transformer_depths"],
                              use_differential_attention=bool(encoder.get("differential", True)),
                              sliding_window=int(encoder["sliding_window"][0]),
                              decoder_sinusoidal_blocks=decoder.get("sinusoidal_blocks", [0]),
                              sampling_rate=sample_rate, **common)
        weights.fill(vae, same_source, _reorder_same(bool(encoder.get("differential", True))),
                     optional=("bottleneck.running_std",))
        return vae
    taps = {side: 3 if cfg.get("conv_mapping", False) else 1 for side, cfg in (("encoder", encoder), ("decoder", decoder))}
    config = SAMESConfig(audio_channels=int(ae.get("io_channels", 2)), patch_size=patch, width=width, stride=stride,
                         depth=int(encoder["transformer_depths"][0]), differential=bool(encoder.get("differential", True)),
                         chunk_size=int(encoder.get("chunk_size", 128)),
                         midpoint_shift=bool(encoder.get("chunk_midpoint_shift", False)),
                         encoder_mapping_taps=taps["encoder"], decoder_mapping_taps=taps["decoder"],
                         sinusoidal_blocks=int(decoder.get("sinusoidal_blocks", [0])[0]), sample_rate=sample_rate,
                         **common)
    vae = AutoencoderSAMES(config)
    reorder = _reorder_same(config.differential)

    def source_of(target: str) -> str:
        name = same_source(target)
        return name[: -len("weight")] + "weight_v" if target.endswith("mapping.weight") else name

    def convert(target: str, tensor: torch.Tensor) -> torch.Tensor:
        if target.endswith("mapping.weight"):  # the checkpoint holds weight_norm's g and v
            g = same_source(target)[: -len("weight")] + "weight_g"
            return _fold_weight_norm(weights.take(g, (tensor.shape[0], 1, 1)), tensor)
        return reorder(target, tensor)

    weights.fill(vae, source_of, convert, optional=("bottleneck.running_std",))
    return vae


def _take_rotary_buffers(weights: _Weights, dim_heads: int):
    """Stability saves each SAME layer's rotary frequencies; the layers here compute the same ones."""
    for name in [n for n in weights.tensors if n.startswith(AE) and n.endswith(".rope.inv_freq")]:
        weights.take(name, (dim_heads // 4,))


def _reorder_same(differential: bool):
    def convert(target: str, tensor: torch.Tensor) -> torch.Tensor:
        return reorder_differential(tensor) if differential and target.endswith("attn.to_qkv.weight") else tensor
    return convert


def _load_seconds(weights: _Weights, raw: dict) -> nn.Module:
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder

    number = _conditioner(raw, "number", weights.folder)
    config = number.get("config", {})
    name = f"{COND}{number.get('id', 'seconds_total')}.embedder.embedding.1."
    if name + "weight" not in weights.tensors:
        raise CheckpointError(f"{weights.folder / WEIGHTS} lacks {name}weight")
    out_dim, fourier = weights.tensors[name + "weight"].shape
    seconds = StableAudio3DurationEmbedder(output_dim=out_dim, fourier_dim=fourier,
                                           min_val=float(config.get("min_val", 0.0)),
                                           max_val=float(config.get("max_val", 384.0)))
    weights.fill(seconds, lambda target: name + target.removeprefix("linear."), optional=("freqs",))
    return seconds


def prompt_config(raw: dict, folder: Path) -> dict:
    """The T5Gemma conditioner's config (model_name, subfolder, max_length, padding_mode)."""
    return _conditioner(raw, "t5gemma", folder).get("config", {})


def text_encoder_folder(folder: Path, raw: dict) -> Path:
    """The T5Gemma the checkpoint names: its subfolder beside the weights, else the hub's."""
    prompt = prompt_config(raw, folder)
    sub = prompt.get("subfolder") or T5GEMMA_FOLDER
    return beside_or_hub(folder, sub, prompt.get("model_name", T5GEMMA_REPO))


def load_stability_folder(folder: Path, device: torch.device, dtype: torch.dtype) -> StableAudio3Parts:
    from transformers import AutoConfig, AutoTokenizer, T5GemmaEncoderModel

    config, ae = read_config(folder)
    raw = read_raw_config(folder)
    t5 = text_encoder_folder(folder, raw)

    def encoder_only(path: Path):
        t5_config = AutoConfig.from_pretrained(path)
        t5_config.is_encoder_decoder = False
        return T5GemmaEncoderModel.from_pretrained(path, config=t5_config)

    tokenizer = load_part(AutoTokenizer.from_pretrained, t5, "T5Gemma tokenizer")
    text_encoder = load_part(encoder_only, t5, "T5Gemma text encoder")
    weights = _Weights(folder)
    transformer = _load_dit(weights)
    vae = _load_same(weights, ae, config.sample_rate)
    _take_rotary_buffers(weights, int(ae["encoder"]["config"].get("dim_heads", 64)))
    seconds = _load_seconds(weights, raw)
    weights.left((DIT, AE, COND))
    parts = StableAudio3Parts(config, tokenizer, text_encoder.eval(), seconds.eval(), transformer.eval(), vae.eval())
    return parts.to(device, dtype)
