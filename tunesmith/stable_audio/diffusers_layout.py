"""stable-audio-open-1.0 from its diffusers layout: model_index.json and one folder per part."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..diffusion.folder import check_oobleck, load_part, read_json, read_pipeline_index
from ..errors import CheckpointError
from .parts import StableAudioConfig, StableAudioParts

PIPELINE_CLASS = "StableAudioPipeline"
PARTS = ("text_encoder", "tokenizer", "projection_model", "transformer", "vae", "scheduler")
DEFAULT_STEPS, DEFAULT_CFG = 100, 7.0  # StableAudioPipeline's defaults


def is_diffusers_folder(folder: Path) -> bool:
    return (folder / "model_index.json").is_file()


def read_config(folder: Path) -> StableAudioConfig:
    """The model's sizes and defaults from its config files alone (no weights read)."""
    read_pipeline_index(folder, PIPELINE_CLASS, PARTS)

    def config(part: str, name: str = "config.json") -> dict:
        return read_json(folder / part / name)

    dit, vae = config("transformer"), config("vae")
    # the VAE's encoder, its decoder and the DiT agree on the latent channels, or the part is named now (not
    # at the first --init-audio with a tensor-size error); the DiT reads and writes them (StableAudioDiTModel)
    check_oobleck(vae, folder / "vae", int(dit.get("out_channels", 64)))
    if int(dit.get("in_channels", 64)) != int(dit.get("out_channels", 64)):
        raise CheckpointError(f"the transformer in {folder} is malformed: it reads {dit.get('in_channels', 64)} "
                              f"latent channels and writes {dit.get('out_channels', 64)}")
    hop = 1
    for ratio in vae.get("downsampling_ratios", [2, 4, 4, 8, 8]):
        hop *= ratio
    return StableAudioConfig(sample_rate=vae.get("sampling_rate", 44100), sample_size=dit.get("sample_size", 1024),
                             hop=hop, audio_channels=vae.get("audio_channels", 2), sampler="dpmpp-2m-sde",
                             steps=DEFAULT_STEPS, cfg=DEFAULT_CFG,
                             cross_ids=["prompt", "seconds_start", "seconds_end"],
                             global_ids=["seconds_start", "seconds_end"],
                             scheduler=config("scheduler", "scheduler_config.json"))


def load_diffusers_folder(folder: Path, device: torch.device, dtype: torch.dtype,
                          vae_dtype: torch.dtype) -> StableAudioParts:
    """Every part from its folder with diffusers' and transformers' own classes; the DiT in `dtype`, the
    VAE in `vae_dtype`, the text encoder and the number embedders in float32."""
    from diffusers import AutoencoderOobleck, StableAudioDiTModel, StableAudioProjectionModel
    from transformers import AutoTokenizer, T5EncoderModel

    config = read_config(folder)
    tokenizer = load_part(AutoTokenizer.from_pretrained, folder / "tokenizer", "tokenizer")
    text_encoder = load_part(T5EncoderModel.from_pretrained, folder / "text_encoder", "text encoder")
    projection = load_part(StableAudioProjectionModel.from_pretrained, folder / "projection_model", "projection model")
    transformer = load_part(StableAudioDiTModel.from_pretrained, folder / "transformer", "transformer")
    vae = load_part(AutoencoderOobleck.from_pretrained, folder / "vae", "VAE")
    seconds = nn.ModuleDict({"seconds_start": projection.start_number_conditioner,
                             "seconds_end": projection.end_number_conditioner})
    parts = StableAudioParts(config, tokenizer, tokenizer.model_max_length, text_encoder.eval(),
                             projection.text_projection, seconds.eval(), transformer.eval(), vae.eval())
    return parts.to(device, dtype, vae_dtype)
