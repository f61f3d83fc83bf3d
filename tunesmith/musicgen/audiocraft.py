"""A checkpoint in audiocraft's layout (facebook/musicgen-style) -> the modules of one MusicGen model.

    state_dict.bin               {"best_state": LM + conditioners, "xp.cfg": the training config as YAML}
    compression_state_dict.bin   {"best_state": EnCodec, "xp.cfg": ...} or {"pretrained": a hub id}

Both are read with torch.load(weights_only=True). The decoder, the text projection and the style
conditioner go through explicit key maps (every key used, every shape checked); EnCodec's keys are
renamed to transformers' EncodecModel by fixed rules and loaded strictly. T5 and MERT are not inside:
they come from the hub (google-t5/t5-base, m-a-p/MERT-v1-95M), or from `t5/` and `mert/` folders
beside the weights (an offline copy, in transformers' layout).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..hub import T5_REPOS, beside_or_hub
from ..quiet import quiet_loading
from .config import DecoderConfig, MusicGenConfig
from .style import StyleConditioner, StyleConfig, StyleModel, check_codebooks_ready, mert_config, style_key_map, \
    training_only_keys
from .weights import _legacy_weight_norm, load_decoder, load_submodule, unreadable

LM_FILE, CODEC_FILE = "state_dict.bin", "compression_state_dict.bin"
MERT_REPO = "m-a-p/MERT-v1-95M"
STYLE = "condition_provider.conditioners.self_wav."
TEXT = "condition_provider.conditioners.description."
MAX_POSITIONS = 4096  # the sin table is computed, not stored: room for the prefix and a 30 s window


class StateDict:
    """The keys()/get() view of an in-memory state dict that weights.load_decoder and load_submodule read."""

    def __init__(self, state: dict, path: Path):
        self.state, self.path = state, path

    def keys(self) -> set[str]:
        return set(self.state)

    def get(self, key: str) -> torch.Tensor:
        return self.state[key]


def read_package(path: Path) -> dict:
    try:
        open(path, "rb").close()
    except OSError as err:
        raise unreadable(path, err) from None
    try:
        pkg = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # damaged files raise many error types; all mean the same to a user
        raise CheckpointError(f"checkpoint file {path} is damaged, incomplete or not audiocraft's "
                              f"({type(err).__name__}); delete it and download it again") from None
    if not isinstance(pkg, dict):
        raise CheckpointError(f"{path} does not hold audiocraft's checkpoint dictionary")
    return pkg


def _lookup(root: dict, dotted: str):
    node = root
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise CheckpointError(f"xp.cfg refers to ${{{dotted}}}, which it does not define")
        node = node[part]
    return node


def _resolve(node, root: dict, depth: int = 0):
    """OmegaConf's plain interpolations (a value that is exactly ${a.b}), which exported configs keep."""
    if depth > 20:
        raise CheckpointError("xp.cfg interpolations loop")
    if isinstance(node, dict):
        return {k: _resolve(v, root, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, root, depth) for v in node]
    if isinstance(node, str):
        match = re.fullmatch(r"\$\{([\w.]+)\}", node)
        if match:
            return _resolve(_lookup(root, match.group(1)), root, depth + 1)
    return node


def xp_config(pkg: dict, path: Path) -> dict:
    import yaml

    raw = pkg.get("xp.cfg")
    if isinstance(raw, str):
        try:
            raw = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise CheckpointError(f"the xp.cfg of {path} is not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} has no xp.cfg training config")
    return _resolve(raw, raw)


def _field(cfg: dict, dotted: str, path: Path):
    try:
        return _lookup(cfg, dotted)
    except CheckpointError:
        raise CheckpointError(f"the xp.cfg of {path} lacks {dotted}") from None


def configs(cfg: dict, path: Path) -> tuple[DecoderConfig, StyleConfig, str]:
    """xp.cfg -> (decoder, style conditioner, T5 name); anything this engine does not run is refused."""
    get = lambda dotted: _field(cfg, dotted, path)  # noqa: E731
    conditioners = get("conditioners")
    if "self_wav" not in conditioners or get("conditioners.self_wav.model") != "style":
        raise CheckpointError(f"{path} is an audiocraft checkpoint without a style conditioner: tunesmith reads "
                              "MusicGen-Style in audiocraft's layout, and other MusicGen models in transformers'")
    if list(get("fuser.prepend")) != ["self_wav", "description"] or get("fuser.cross") or get("fuser.sum"):
        raise CheckpointError(f"{path}: conditions fused as {get('fuser')}; expected a [style | text] prefix")
    lm = get("transformer_lm")
    n_q, card, dim = lm["n_q"], lm["card"], lm["dim"]
    expected = dict(norm_first=True, bias_ff=False, bias_attn=False, bias_proj=False, activation="gelu",
                    positional_embedding="sin", layer_scale=None, norm="layer_norm")
    for key, value in expected.items():
        if lm.get(key, value) != value:
            raise CheckpointError(f"{path}: transformer_lm.{key} is {lm[key]!r}; tunesmith runs {value!r}")
    if lm.get("max_period", 10000) != 10000 or lm.get("positional_scale", 1.0) != 1.0:
        raise CheckpointError(f"{path}: positional embedding settings differ from MusicGen's")
    pattern = get("codebooks_pattern")
    if pattern.get("modeling") != "delay" or list(pattern["delay"]["delays"]) != list(range(n_q)):
        raise CheckpointError(f"{path}: codebook pattern {pattern.get('modeling')} is not MusicGen's delay pattern")
    if get("channels") != 1:
        raise CheckpointError(f"{path}: {get('channels')} audio channels; MusicGen-Style is mono")
    t5_name = get("conditioners.description.t5.name")
    if t5_name not in T5_REPOS:
        raise CheckpointError(f"{path}: text encoder {t5_name} is not one tunesmith knows")
    decoder = DecoderConfig(dim=dim, n_layers=lm["num_layers"], n_heads=lm["num_heads"],
                            ffn_dim=int(lm.get("hidden_scale", 4) * dim), n_codebooks=n_q, vocab_size=card,
                            max_positions=MAX_POSITIONS, text_dim=0, text_proj=True, pad_token=card, style=True)
    s = get("conditioners.self_wav.style")
    if s.get("model_name") != "mert":
        raise CheckpointError(f"{path}: style features from {s.get('model_name')}; tunesmith runs MERT")
    scales = {"default": (512, 8, 8), "xsmall": (256, 8, 4), "large": (1024, 16, 24)}
    scale = s.get("transformer_scale", "default")
    if scale not in scales or not s.get("batch_norm", True) or s.get("n_q_out", 6) < 1:
        raise CheckpointError(f"{path}: style conditioner settings (transformer {scale}, batch_norm "
                              f"{s.get('batch_norm')}, n_q_out {s.get('n_q_out')}) are not MusicGen-Style's")
    sdim, heads, layers = scales[scale]
    style = StyleConfig(dim=sdim, n_layers=layers, n_heads=heads, ffn_dim=4 * sdim, out_dim=dim,
                        n_q=s.get("n_q_out", 6), bins=s.get("bins", 1024), eval_q=s.get("eval_q", 3),
                        ds_factor=s.get("ds_factor", 15), excerpt=float(s.get("length", 3.0)),
                        sample_rate=get("sample_rate"))
    return decoder, style, t5_name


def lm_key_map(cfg: DecoderConfig) -> dict[str, tuple[list[str], str]]:
    """Our MusicGenLM's names -> (audiocraft keys, how to join them). audiocraft's fused in_proj_weight
    is q, k, v stacked in that order, as our qkv: taken whole."""
    K = range(cfg.n_codebooks)
    m = {
        "embed": ([f"emb.{k}.weight" for k in K], "stack"),
        "heads.weight": ([f"linears.{k}.weight" for k in K], "cat"),
        "norm.weight": (["out_norm.weight"], "one"),
        "norm.bias": (["out_norm.bias"], "one"),
        "text_proj.weight": ([TEXT + "output_proj.weight"], "one"),
        "text_proj.bias": ([TEXT + "output_proj.bias"], "one"),
    }
    for i in range(cfg.n_layers):
        src, dst = f"transformer.layers.{i}.", f"layers.{i}."
        m[dst + "attn.qkv.weight"] = ([src + "self_attn.in_proj_weight"], "one")
        m[dst + "attn.out.weight"] = ([src + "self_attn.out_proj.weight"], "one")
        m[dst + "fc1.weight"] = ([src + "linear1.weight"], "one")
        m[dst + "fc2.weight"] = ([src + "linear2.weight"], "one")
        for ours, theirs in (("attn_norm", "norm1"), ("mlp_norm", "norm2")):
            m[dst + f"{ours}.weight"] = ([src + f"{theirs}.weight"], "one")
            m[dst + f"{ours}.bias"] = ([src + f"{theirs}.bias"], "one")
    return m


# audiocraft's SEANet and RVQ names -> transformers' EncodecModel names.
ENCODEC_RULES = [
    (re.compile(r"^(encoder|decoder)\.model\."), r"\1.layers."),
    (re.compile(r"\.conv\.conv\."), ".conv."),
    (re.compile(r"\.convtr\.convtr\."), ".conv."),
    (re.compile(r"^quantizer\.vq\.layers\.(\d+)\._codebook\."), r"quantizer.layers.\1.codebook."),
]


def encodec_from_audiocraft(key: str) -> str:
    for rule, to in ENCODEC_RULES:
        key = rule.sub(to, key)
    return _legacy_weight_norm(key)


def encodec_config(cfg: dict, path: Path):
    """audiocraft's encodec/seanet/rvq settings -> transformers EncodecConfig."""
    from transformers import EncodecConfig

    get = lambda dotted: _field(cfg, dotted, path)  # noqa: E731
    seanet, rvq = get("seanet"), get("rvq")
    if seanet.get("norm", "weight_norm") != "weight_norm" or get("encodec.renormalize"):
        raise CheckpointError(f"{path}: EnCodec settings differ from EnCodec 32 kHz's")
    hop = 1
    for ratio in seanet["ratios"]:
        hop *= ratio
    frame_rate = get("sample_rate") / hop
    config = EncodecConfig(
        hidden_size=seanet["dimension"], num_filters=seanet["n_filters"],
        num_residual_layers=seanet["n_residual_layers"], upsampling_ratios=list(seanet["ratios"]),
        norm_type="weight_norm", kernel_size=seanet["kernel_size"], last_kernel_size=seanet["last_kernel_size"],
        residual_kernel_size=seanet["residual_kernel_size"], dilation_growth_rate=seanet["dilation_base"],
        use_causal_conv=bool(get("encodec.causal")), pad_mode=seanet["pad_mode"], compress=seanet["compress"],
        num_lstm_layers=seanet["lstm"], trim_right_ratio=seanet.get("decoder", {}).get("trim_right_ratio", 1.0),
        codebook_size=rvq["bins"], codebook_dim=seanet["dimension"], use_conv_shortcut=not seanet["true_skip"],
        target_bandwidths=[rvq["n_q"] * math.log2(rvq["bins"]) * frame_rate / 1000], sampling_rate=get("sample_rate"),
        audio_channels=get("channels"), normalize=False, chunk_length_s=None, overlap=None)
    # transformers builds 1000 * bandwidth // (frame_rate * 10) quantizers (as if codes had 10 bits) and
    # encodes with bandwidth / (frame_rate * bits): both are n_q for EnCodec 32 kHz's 2048 codes.
    if config.num_quantizers != rvq["n_q"]:
        raise CheckpointError(f"{path}: transformers' EncodecModel cannot hold {rvq['n_q']} codebooks of {rvq['bins']}")
    return config


def load_codec(folder: Path) -> torch.nn.Module:
    from transformers import EncodecModel

    path = folder / CODEC_FILE
    pkg = read_package(path)
    if "pretrained" in pkg:  # a reference to a released EnCodec, in transformers' layout on the hub
        name = str(pkg["pretrained"]).removeprefix("//pretrained/")
        try:
            with quiet_loading(diffusers=False):
                return EncodecModel.from_pretrained(str(beside_or_hub(folder, "encodec", name))).float()
        except OSError as err:
            raise CheckpointError(f"cannot load EnCodec {name} ({err})") from None
    if "best_state" not in pkg:
        raise CheckpointError(f"{path} holds neither EnCodec weights nor the name of a released EnCodec")
    codec = EncodecModel(encodec_config(xp_config(pkg, path), path))
    state = StateDict(pkg["best_state"], path)
    load_submodule(codec, state, "", "audio codec", rename=encodec_from_audiocraft)
    return codec


def load_text_encoder(folder: Path, t5_name: str):
    """-> (tokenizer, T5EncoderModel) from `t5/` beside the weights, or from the hub."""
    from transformers import AutoTokenizer, T5EncoderModel

    where = beside_or_hub(folder, "t5", T5_REPOS[t5_name])
    try:
        with quiet_loading(diffusers=False):
            return AutoTokenizer.from_pretrained(str(where)), T5EncoderModel.from_pretrained(str(where)).float().eval()
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot load the text encoder from {where} ({type(err).__name__}: {err})") from None


def load_mert(folder: Path) -> torch.nn.Module:
    """MERT as transformers' HubertModel, built from MERT's config.json and loaded strictly (older
    checkpoints name weight norm's parts weight_g / weight_v)."""
    from transformers import HubertModel

    from .weights import Checkpoint

    where = beside_or_hub(folder, "mert", MERT_REPO)
    try:
        raw = json.loads((where / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read MERT's config.json in {where} ({err})") from None
    mert = HubertModel(mert_config(raw))
    ckpt = Checkpoint(where)
    load_submodule(mert, ckpt, "", "MERT", rename=_legacy_weight_norm)
    ckpt.close()
    return mert.float().eval()


def load_style_checkpoint(folder: Path, dtype: torch.dtype):
    """-> (MusicGenConfig, MusicGenLM, tokenizer, T5 encoder, EnCodec, StyleModel), all on the CPU."""
    from .lm import MusicGenLM, sinusoidal_positions

    path = folder / LM_FILE
    pkg = read_package(path)
    if "best_state" not in pkg:
        raise CheckpointError(f"{path} has no best_state: not an exported audiocraft checkpoint")
    cfg = xp_config(pkg, path)
    decoder, style_cfg, t5_name = configs(cfg, path)
    tokenizer, t5 = load_text_encoder(folder, t5_name)
    decoder.text_dim = t5.config.d_model
    state = StateDict(pkg["best_state"], path)

    with torch.device("meta"):
        lm = MusicGenLM(decoder)
    used = load_decoder(lm, state, decoder, dtype, key_map=lm_key_map(decoder))
    lm.positions = sinusoidal_positions(decoder.max_positions, decoder.dim)

    check_codebooks_ready(state.get, style_cfg, STYLE)
    mert = load_mert(folder)
    style_cfg.mert_dim = mert.config.hidden_size  # audiocraft writes 768, MERT-v1-95M's width
    conditioner = StyleConditioner(style_cfg)
    used |= load_decoder(conditioner, state, style_cfg, torch.float32, key_map=style_key_map(style_cfg, STYLE),
                         buffers=True)
    used |= set(training_only_keys(style_cfg, STYLE)) & state.keys()
    unused = sorted(state.keys() - used)
    if unused:
        raise CheckpointError(f"unexpected tensor in {path}: {unused[0]}")

    codec = load_codec(folder)
    sample_rate = codec.config.sampling_rate
    hop = 1
    for ratio in codec.config.upsampling_ratios:
        hop *= ratio
    if codec.config.codebook_size != decoder.vocab_size or codec.config.num_quantizers != decoder.n_codebooks:
        raise CheckpointError(f"EnCodec's {codec.config.num_quantizers} codebooks of {codec.config.codebook_size} "
                              f"do not match the decoder's {decoder.n_codebooks} of {decoder.vocab_size}")
    if sample_rate % hop or sample_rate != style_cfg.sample_rate:
        raise CheckpointError(f"EnCodec at {sample_rate} Hz (hop {hop}) does not fit the {style_cfg.sample_rate} Hz model")
    config = MusicGenConfig(decoder, t5.config.to_dict(), codec.config.to_dict(), sample_rate, sample_rate // hop)
    for module in (lm, conditioner, codec):
        module.eval()
    return config, lm, tokenizer, t5, codec, StyleModel(style_cfg, conditioner, mert)
