"""model_config.json of the stable-audio-tools layout -> plain sizes, refusing what we cannot run.

Only a conditional DiT ("diffusion_cond", "dit") with an Oobleck VAE, one T5 prompt conditioner and
number conditioners is supported: exactly what diffusers' StableAudioDiTModel, AutoencoderOobleck and
StableAudioNumberConditioner compute. Any other setting is refused with one line naming it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError

CONFIG_FILE = "model_config.json"
TIME_FEATURES = 256  # stable-audio-tools' DiT: timestep Fourier features, fixed


@dataclass
class DiTSizes:
    io_channels: int  # latent channels (64)
    embed_dim: int  # 1024 for small
    depth: int
    num_heads: int
    cond_token_dim: int  # width of the cross-attention tokens in (768)
    cross_dim: int  # their width after to_cond_embed: embed_dim when projected, else cond_token_dim
    global_cond_dim: int  # width of the global condition in
    qk_norm: bool  # LayerNorm(head_dim, eps=1e-6, affine) on queries and keys of both attentions

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def kv_heads(self) -> int:  # cross-attention key/value heads (fewer than num_heads: grouped queries)
        return self.cross_dim // self.head_dim

    @property
    def rotary_dim(self) -> int:  # stable-audio-tools rotates max(head_dim // 2, 32) dims of each head
        return max(self.head_dim // 2, 32)


@dataclass
class VAESizes:
    audio_channels: int
    encoder_channels: int
    decoder_channels: int
    c_mults: list[int]
    strides: list[int]
    latent_dim: int  # channels of the latents the DiT sees (the encoder makes mean and scale: twice that)

    @property
    def hop(self) -> int:
        return math.prod(self.strides)


@dataclass
class ToolsConfig:
    sample_rate: int
    sample_size: int  # audio samples
    dit: DiTSizes
    vae: VAESizes
    cond_dim: int  # width of every conditioner's output
    prompt_id: str  # the T5 conditioner's id ("prompt")
    t5_name: str  # "t5-base"
    t5_max_length: int
    t5_project_out: bool  # a Linear after T5 even when its width already is cond_dim
    numbers: dict[str, tuple[float, float]]  # number conditioner id -> (min_val, max_val)
    cross_ids: list[str]
    global_ids: list[str]
    objective: str


def read_tools_config(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"no {CONFIG_FILE} in {folder}: not a stable-audio-tools checkpoint folder")
    try:
        raw = json.loads(path.read_text())
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {(err.strerror or str(err)).lower()}") from None
    except ValueError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} is not a stable-audio-tools model config (not a JSON object)")
    return raw


def text_encoder_name(config: dict) -> str:
    """The T5 the prompt conditioner names ("t5-base"): not stored in the checkpoint, loaded beside it."""
    return _prompt_conditioner(config)[1].get("t5_model_name", "t5-base")


def _get(section: dict, key: str, where: str):
    if not isinstance(section, dict) or key not in section:
        raise CheckpointError(f"{CONFIG_FILE} lacks {where + '.' if where else ''}{key}")
    return section[key]


def _require(ok: bool, message: str):
    if not ok:
        raise CheckpointError(f"{CONFIG_FILE}: {message}")


ANY = object()  # a setting whose value we read or that does not change the forward pass


def _only(section: dict, defaults: dict, where: str):
    """Settings we have no code for must be absent or at the default stable-audio-tools gives them."""
    for key, value in section.items():
        _require(key in defaults, f"unsupported setting {where}.{key}")
        if defaults[key] is not ANY and value != defaults[key]:
            _require(False, f"unsupported value {where}.{key}={json.dumps(value)} (only {json.dumps(defaults[key])})")


def _conditioners(config: dict) -> tuple[dict, list[dict]]:
    cond = _get(_get(config, "model", ""), "conditioning", "model")
    return cond, _get(cond, "configs", "model.conditioning")


def _prompt_conditioner(config: dict) -> tuple[str, dict]:
    t5 = [c for c in _conditioners(config)[1] if isinstance(c, dict) and c.get("type") == "t5"]
    _require(len(t5) == 1, f"expected one t5 conditioner, found {len(t5)}")
    return _get(t5[0], "id", "model.conditioning.configs[t5]"), t5[0].get("config", {})


def parse_tools_config(config: dict) -> ToolsConfig:
    _require(config.get("model_type") == "diffusion_cond",
             f"model_type is {json.dumps(config.get('model_type'))}, not \"diffusion_cond\"")
    model = _get(config, "model", "")
    diffusion = _get(model, "diffusion", "model")
    _require(diffusion.get("type") == "dit", f"diffusion type {json.dumps(diffusion.get('type'))} is not \"dit\"")
    objective = diffusion.get("diffusion_objective", "v")
    _require(objective == "rf_denoiser", f"diffusion objective \"{objective}\" is not supported (rf_denoiser only)")
    for key in ("input_concat_ids", "prepend_cond_ids"):
        _require(not diffusion.get(key), f"model.diffusion.{key} is not supported")
    dit = _dit_sizes(_get(diffusion, "config", "model.diffusion"))
    vae = _vae_sizes(_get(model, "pretransform", "model"))
    _require(model.get("io_channels", dit.io_channels) == dit.io_channels == vae.latent_dim,
             f"DiT io_channels {dit.io_channels} differ from the VAE's latent_dim {vae.latent_dim}")
    _require(config.get("audio_channels", vae.audio_channels) == vae.audio_channels,
             f"audio_channels {config.get('audio_channels')} differ from the VAE's io_channels {vae.audio_channels}")

    cond, configs = _conditioners(config)
    cond_dim = _get(cond, "cond_dim", "model.conditioning")
    prompt_id, t5 = _prompt_conditioner(config)
    _only(t5, {"t5_model_name": ANY, "max_length": ANY, "project_out": ANY, "enable_grad": ANY},
          f"conditioner {prompt_id}")
    numbers = {}
    for c in configs:
        _require(isinstance(c, dict), f"model.conditioning.configs holds {json.dumps(c)}, not a conditioner")
        kind, cid = c.get("type"), c.get("id")
        _require(kind in ("t5", "number"), f"conditioner type {json.dumps(kind)} (id {json.dumps(cid)}) is not supported")
        if kind == "number":
            settings = c.get("config", {})
            _only(settings, {"min_val": ANY, "max_val": ANY}, f"conditioner {cid}")
            numbers[cid] = (float(settings.get("min_val", 0)), float(settings.get("max_val", 1)))
    cross_ids = list(diffusion.get("cross_attention_cond_ids", []))
    global_ids = list(diffusion.get("global_cond_ids", []))
    for cid in cross_ids:
        _require(cid == prompt_id or cid in numbers, f"cross-attention condition {json.dumps(cid)} has no conditioner")
    for cid in global_ids:
        _require(cid in numbers, f"global condition {json.dumps(cid)} is not a number conditioner")
    _require(prompt_id in cross_ids, f"the prompt ({prompt_id}) is not among the cross-attention conditions")
    _require(bool(global_ids), "a DiT without global conditions is not supported")
    _require(dit.cond_token_dim == cond_dim, f"DiT cond_token_dim {dit.cond_token_dim} differs from cond_dim {cond_dim}")
    _require(dit.global_cond_dim == cond_dim * len(global_ids),
             f"DiT global_cond_dim {dit.global_cond_dim} is not {len(global_ids)} x cond_dim {cond_dim}")
    return ToolsConfig(
        sample_rate=int(_get(config, "sample_rate", "")), sample_size=int(_get(config, "sample_size", "")),
        dit=dit, vae=vae, cond_dim=cond_dim, prompt_id=prompt_id, t5_name=t5.get("t5_model_name", "t5-base"),
        t5_max_length=int(t5.get("max_length", 128)), t5_project_out=bool(t5.get("project_out", False)),
        numbers=numbers, cross_ids=cross_ids, global_ids=global_ids, objective=objective)


# DiffusionTransformer / ContinuousTransformer / TransformerBlock settings -> the only value we compute (their
# defaults, which a config may spell out), or ANY. zero_init_branch_outputs only changes the initialisation.
DIT_SETTINGS = {name: ANY for name in ("io_channels", "embed_dim", "depth", "num_heads", "cond_token_dim",
                                        "global_cond_dim", "project_cond_tokens", "project_global_cond",
                                        "attn_kwargs", "zero_init_branch_outputs")} | {
    "transformer_type": "continuous_transformer", "global_cond_type": "prepend", "timestep_cond_type": "global",
    "patch_size": 1, "input_concat_dim": 0, "prepend_cond_dim": 0, "rotary_pos_emb": True, "causal": False,
    "use_sinusoidal_emb": False, "use_abs_pos_emb": False, "num_memory_tokens": 0, "final_cross_attn_ix": -1,
    "sliding_window": None, "conformer": False, "layer_scale": False, "remove_norms": False, "add_rope": False,
    "norm_kwargs": {}, "ff_kwargs": {}}


def _dit_sizes(dit: dict) -> DiTSizes:
    where = "model.diffusion.config"
    attn = dit.get("attn_kwargs", {})
    _only(attn, {"qk_norm": ANY, "differential": False, "feat_scale": False}, f"{where}.attn_kwargs")
    qk_norm = attn.get("qk_norm", "none")
    _require(qk_norm in ("ln", "none"), f"unsupported value {where}.attn_kwargs.qk_norm=\"{qk_norm}\" (ln or none)")
    _only(dit, DIT_SETTINGS, where)
    sizes = {k: int(_get(dit, k, where)) for k in ("io_channels", "embed_dim", "depth", "num_heads",
                                                   "cond_token_dim", "global_cond_dim")}
    projected = dit.get("project_cond_tokens", True)
    out = DiTSizes(**sizes, cross_dim=sizes["embed_dim"] if projected else sizes["cond_token_dim"],
                   qk_norm=qk_norm == "ln")
    _require(out.embed_dim % out.num_heads == 0, f"embed_dim {out.embed_dim} is not divisible by {out.num_heads} heads")
    _require(out.cross_dim % out.head_dim == 0 and out.kv_heads > 0 and out.num_heads % out.kv_heads == 0,
             f"cross-attention width {out.cross_dim} does not split into heads of {out.head_dim}")
    _require(dit.get("project_global_cond", True) or out.global_cond_dim == out.embed_dim,
             f"an unprojected global condition must be embed_dim wide, not {out.global_cond_dim}")
    return out


def _vae_sizes(pretransform: dict) -> VAESizes:
    where = "model.pretransform"
    _require(pretransform.get("type") == "autoencoder", f"pretransform type {json.dumps(pretransform.get('type'))} "
             "is not \"autoencoder\"")
    _require(pretransform.get("scale", 1.0) == 1.0, f"a latent scale ({pretransform.get('scale')}) is not supported")
    ae = _get(pretransform, "config", where)
    enc, dec = _get(ae, "encoder", f"{where}.config"), _get(ae, "decoder", f"{where}.config")
    for part, name in ((enc, "encoder"), (dec, "decoder")):
        _require(part.get("type") == "oobleck", f"{name} type {json.dumps(part.get('type'))} is not \"oobleck\"")
    _require(_get(ae, "bottleneck", f"{where}.config").get("type") == "vae", "only the \"vae\" bottleneck is supported")
    e, d = _get(enc, "config", f"{where}.config.encoder"), _get(dec, "config", f"{where}.config.decoder")
    _only(e, {"in_channels": ANY, "channels": ANY, "c_mults": ANY, "strides": ANY, "latent_dim": ANY,
              "use_snake": True, "antialias_activation": False}, f"{where}.config.encoder.config")
    # why final_tanh must be written: stable-audio-tools' default is True, diffusers has no tanh
    _only(d, {"out_channels": ANY, "channels": ANY, "c_mults": ANY, "strides": ANY, "latent_dim": ANY,
              "use_snake": True, "antialias_activation": False, "use_nearest_upsample": False, "final_tanh": False,
              "soft_clip": False}, f"{where}.config.decoder.config")
    _require(e.get("use_snake") is True and d.get("use_snake") is True, "only Snake (use_snake: true) VAEs are supported")
    _require(d.get("final_tanh") is False, "the VAE decoder must say final_tanh: false (a tanh output is not supported)")
    latent = int(_get(ae, "latent_dim", f"{where}.config"))
    sizes = VAESizes(audio_channels=int(_get(ae, "io_channels", f"{where}.config")),
                     encoder_channels=int(_get(e, "channels", f"{where}.config.encoder.config")),
                     decoder_channels=int(_get(d, "channels", f"{where}.config.decoder.config")),
                     c_mults=list(_get(e, "c_mults", f"{where}.config.encoder.config")),
                     strides=list(_get(e, "strides", f"{where}.config.encoder.config")), latent_dim=latent)
    _require(d.get("c_mults") == sizes.c_mults and d.get("strides") == sizes.strides,
             "VAE encoder and decoder differ in c_mults or strides")
    _require(e.get("latent_dim") == 2 * latent == sizes.encoder_channels and d.get("latent_dim") == latent,
             f"VAE latent sizes (encoder {e.get('latent_dim')}, decoder {d.get('latent_dim')}, channels "
             f"{sizes.encoder_channels}) do not fit a VAE bottleneck of {latent}")
    _require(e.get("in_channels", 2) == d.get("out_channels", 2) == sizes.audio_channels,
             f"VAE in/out channels differ from its io_channels {sizes.audio_channels}")
    _require(ae.get("downsampling_ratio", sizes.hop) == sizes.hop,
             f"downsampling_ratio {ae.get('downsampling_ratio')} is not the product of the strides ({sizes.hop})")
    return sizes
