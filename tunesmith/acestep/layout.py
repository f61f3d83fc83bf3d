"""An ACE-Step 1.5 pipeline folder in diffusers' layout: model_index.json and one folder per part."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..diffusion.folder import check_oobleck, load_part, read_json, read_pipeline_index
from .parts import GUIDED_CFG, GUIDED_STEPS, LONGEST, TURBO_STEPS, AceStepConfig, AceStepParts

PIPELINE_CLASS = "AceStepPipeline"
PARTS = ("text_encoder", "tokenizer", "condition_encoder", "transformer", "vae", "scheduler")


def read_config(folder: Path) -> AceStepConfig:
    """Sizes and defaults from the config files alone (no weights read). Turbo is told as the pipeline
    tells it: the transformer's is_turbo, or its model_version "turbo"."""
    read_pipeline_index(folder, PIPELINE_CLASS, PARTS)
    dit, vae = read_json(folder / "transformer" / "config.json"), read_json(folder / "vae" / "config.json")
    turbo = bool(dit.get("is_turbo", False) or dit.get("model_version") == "turbo")
    latent_dim = int(dit.get("audio_acoustic_hidden_dim", 64))
    check_oobleck(vae, folder / "vae", latent_dim)
    return AceStepConfig(sample_rate=int(vae.get("sampling_rate", 48000)),
                         hop=math.prod(vae.get("downsampling_ratios", [2, 4, 4, 6, 10])),
                         audio_channels=int(vae.get("audio_channels", 2)),
                         latent_dim=latent_dim, turbo=turbo,
                         steps=TURBO_STEPS if turbo else GUIDED_STEPS, cfg=1.0 if turbo else GUIDED_CFG)


def checkpoint_limits(folder: Path) -> tuple[float, bool]:
    """(longest song in seconds, turbo) of a folder (the family table's limits): a folder missing a part
    is refused here, before any value is used."""
    return LONGEST, read_config(folder).turbo


def load_folder(folder: Path, device: torch.device, dtype: torch.dtype, vae_dtype: torch.dtype,
                dit_dtype: torch.dtype | None = None) -> AceStepParts:
    """Every part with diffusers' and transformers' own classes, each failure one line naming the part. Each
    part is read in its own dtype (the encoders `dtype`, the DiT `dit_dtype`, default `dtype`, the VAE
    `vae_dtype`): the XL DiT is 16 GB in float32, 8 GB in bfloat16, so a part is never held wider than
    it will run."""
    from diffusers import AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step import AceStepConditionEncoder
    from transformers import AutoModel, AutoTokenizer

    dit_dtype = dit_dtype or dtype
    config = read_config(folder)
    tokenizer = load_part(AutoTokenizer.from_pretrained, folder / "tokenizer", "tokenizer")
    text_encoder = load_part(lambda path: AutoModel.from_pretrained(path, dtype=dtype), folder / "text_encoder",
                             "text encoder")
    condition = load_part(lambda path: AceStepConditionEncoder.from_pretrained(path, torch_dtype=dtype),
                          folder / "condition_encoder", "condition encoder")
    transformer = load_part(lambda path: AceStepTransformer1DModel.from_pretrained(path, torch_dtype=dit_dtype),
                            folder / "transformer", "transformer")
    vae = load_part(lambda path: AutoencoderOobleck.from_pretrained(path, torch_dtype=vae_dtype), folder / "vae",
                    "VAE")
    scheduler = load_part(FlowMatchEulerDiscreteScheduler.from_pretrained, folder / "scheduler", "scheduler")
    parts = AceStepParts(config, tokenizer, text_encoder.eval(), condition.eval(), transformer.eval(), vae.eval(),
                         scheduler)
    return parts.to(device, dtype, vae_dtype, dit_dtype)
