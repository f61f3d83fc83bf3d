"""A checkpoint folder -> the modules of one MusicGen model, on a device and dtype."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..lora import fit, merge
from .adapters import lm_weights, locator
from .conditioning import TextConditioner
from .config import MusicGenConfig
from .linear import specialise_linears
from .lm import MusicGenLM, sinusoidal_positions
from .style import StyleModel
from .weights import T5_TIED, Checkpoint, encodec_rename, load_decoder, load_submodule, unreadable

log = logging.getLogger("tunesmith")

TOKENIZER_FILES = ("tokenizer.json", "spiece.model")


@dataclass
class LoadedModel:
    config: MusicGenConfig
    lm: MusicGenLM
    text: TextConditioner
    codec: torch.nn.Module  # transformers EncodecModel, float32
    style: StyleModel | None = None  # MusicGen-Style's conditioner and MERT, float32
    # load_folder(keep_base=True) on packed or quantized step linears: the LM's 2-D weights in float32 as
    # read (adapters.lm_weights' names), on the CPU: what a LoRA swap derives the linears from again
    base: dict | None = None

    def to(self, device: torch.device, dtype: torch.dtype) -> "LoadedModel":
        self.lm.release()
        self.lm.to(device=device, dtype=dtype)
        self.text.encoder.to(device)
        self.codec.to(device)
        if self.style is not None:
            self.style.to(device)
        return self


def read_config(folder: Path) -> MusicGenConfig:
    path = folder / "config.json"
    if not path.exists():
        raise CheckpointError(f"no config.json in {folder}: not a MusicGen checkpoint folder")
    try:
        raw = json.loads(path.read_text())
    except OSError as err:
        raise unreadable(path, err) from None
    except ValueError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from None
    return MusicGenConfig.from_dict(raw)


def _build_on_meta(factory):
    with torch.device("meta"):
        return factory()


def _check_materialised(module: torch.nn.Module, what: str):
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if tensor.is_meta:
            raise CheckpointError(f"{what} tensor {name} was not filled from the checkpoint")


def _fit_adapters(adapters: list, lm: MusicGenLM, cfg) -> list:
    """The adapters' patches on this LM's weights, every shape checked (the LM may be on the meta device)."""
    if not adapters:
        return []
    shapes = {name: tuple(w.shape) for name, w in lm_weights(lm).items()}
    return fit(adapters, locator(cfg), shapes, "this MusicGen decoder")


def load_folder(folder: Path, device: torch.device, dtype: torch.dtype, quantize: str | None = None,
                adapters: list | None = None, keep_base: bool = False) -> LoadedModel:
    """adapters: read LoRA adapters (tunesmith.lora.Adapter), checked against the decoder's shapes before its
    weights are read (transformers layout) and merged into them, in order, before the linears are packed or
    quantized; with adapters the decoder is read in float32 and rounded to `dtype` once, after the merge.
    keep_base: keep the LM's float32 weights (LoadedModel.base) when the step linears are specialised."""
    from transformers import AutoTokenizer, EncodecConfig, EncodecModel, T5Config, T5EncoderModel

    from .audiocraft import LM_FILE, load_style_checkpoint

    if (folder / LM_FILE).is_file() and not (folder / "config.json").is_file():  # audiocraft's layout
        config, lm, tokenizer, t5, codec, style = load_style_checkpoint(folder, dtype)
        merge(lm_weights(lm), _fit_adapters(adapters, lm, config.decoder))
        base = _float_base(lm) if keep_base else None
        model = LoadedModel(config, lm, TextConditioner(tokenizer, t5), codec, style).to(device, dtype)
        return _specialised(model, device, quantize, base)
    config = read_config(folder)
    if not any((folder / name).exists() for name in TOKENIZER_FILES):
        raise CheckpointError(f"no tokenizer (tokenizer.json or spiece.model) in {folder}")
    ckpt = Checkpoint(folder)

    lm = _build_on_meta(lambda: MusicGenLM(config.decoder))
    patches = _fit_adapters(adapters, lm, config.decoder)
    used = load_decoder(lm, ckpt, config.decoder, torch.float32 if patches or keep_base else dtype)
    merge(lm_weights(lm), patches)
    base = _float_base(lm) if keep_base else None
    # The position table is derived from the config, not stored: rebuild it off the meta device.
    lm.positions = sinusoidal_positions(config.decoder.max_positions, config.decoder.dim)

    t5_config = T5Config(**{k: v for k, v in config.text_encoder.items() if k != "model_type"})
    t5 = _build_on_meta(lambda: T5EncoderModel(t5_config))
    used |= load_submodule(t5, ckpt, "text_encoder.", "text encoder", tied=T5_TIED)

    codec_config = EncodecConfig(**{k: v for k, v in config.audio_encoder.items() if k != "model_type"})
    codec = EncodecModel(codec_config)  # small, and its conv buffers come from the config: build for real
    used |= load_submodule(codec, ckpt, "audio_encoder.", "audio codec", rename=encodec_rename)

    unused = sorted(ckpt.keys() - used)
    if unused:
        raise CheckpointError(f"unexpected tensor in checkpoint: {unused[0]}")
    ckpt.close()
    for module, what in ((lm, "decoder"), (t5, "text encoder"), (codec, "audio codec")):
        _check_materialised(module, what)
        module.eval()

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as err:
        raise CheckpointError(f"cannot load the tokenizer in {folder} ({type(err).__name__}: {err})") from None
    model = LoadedModel(config, lm, TextConditioner(tokenizer, t5), codec).to(device, dtype)
    return _specialised(model, device, quantize, base)


def _float_base(lm: MusicGenLM) -> dict[str, torch.Tensor]:
    """The LM's 2-D weights as float32 copies on the CPU (the live ones are rounded, packed or quantized next)."""
    return {name: w.detach().to("cpu", torch.float32, copy=True) for name, w in lm_weights(lm).items()}


def _specialised(model: LoadedModel, device: torch.device, quantize: str | None, base) -> LoadedModel:
    """The step linears specialised; the float32 base kept only if they were (plain linears are swapped live)."""
    if specialise_linears(model.lm, device, quantize):
        model.base = base
    return model
