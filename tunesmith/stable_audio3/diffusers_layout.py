"""Stable Audio 3 in diffusers' layout: what StableAudio3Pipeline.save_pretrained writes (model_index.json
and one folder per part), as diffusers' converter makes it from Stability's checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..diffusion.folder import load_part, read_json, read_pipeline_index
from ..errors import CheckpointError
from .parts import StableAudio3Config, StableAudio3Parts

PIPELINE_CLASS = "StableAudio3Pipeline"
PARTS = ("text_encoder", "tokenizer", "duration_embedder", "transformer", "vae", "scheduler")
SCHEDULER = "FlowMatchEulerDiscreteScheduler"
PINGPONG_STEPS, EULER_STEPS = 8, 100  # the pipeline's defaults for the post-trained and the base checkpoints
# scheduler settings that would bend the log-SNR schedule in ways the sampler does not follow
UNSUPPORTED = ("use_dynamic_shifting", "shift_terminal", "use_karras_sigmas", "use_exponential_sigmas",
               "use_beta_sigmas", "invert_sigmas")


def read_config(folder: Path) -> StableAudio3Config:
    """The model's sizes and defaults from its config files alone (no weights read)."""
    read_pipeline_index(folder, PIPELINE_CLASS, PARTS)
    vae = read_json(folder / "vae" / "config.json")
    seconds = read_json(folder / "duration_embedder" / "config.json")
    scheduler = read_json(folder / "scheduler" / "scheduler_config.json")
    if scheduler.get("_class_name") != SCHEDULER:  # later diffusers write their own SA3 schedulers
        raise CheckpointError(f"{folder / 'scheduler'} holds a {scheduler.get('_class_name')}: tunesmith reads "
                              f"Stable Audio 3 folders with diffusers 0.42's {SCHEDULER}")
    bent = [name for name in UNSUPPORTED if scheduler.get(name)]
    if bent:
        raise CheckpointError(f"{folder / 'scheduler'}: the scheduler setting {bent[0]} is not one Stable Audio 3 uses")
    stochastic = bool(scheduler.get("stochastic_sampling", False))
    return StableAudio3Config(
        sample_rate=int(vae.get("sampling_rate", 44100)),
        hop=int(vae.get("patch_size", 256)) * math.prod(vae.get("encoder_strides", [16])),
        latent_dim=int(vae.get("latent_dim", 256)), audio_channels=int(vae.get("audio_channels", 2)),
        # the folder does not say how long a clip the DiT was made for: the seconds condition's top (384 s,
        # where it stops growing) stands in
        longest=float(seconds.get("max_val", 384.0)), sampler="pingpong" if stochastic else "euler",
        steps=PINGPONG_STEPS if stochastic else EULER_STEPS,
        timestep_scale=float(scheduler.get("num_train_timesteps", 1000)), shift=float(scheduler.get("shift", 1.0)))


def load_diffusers_folder(folder: Path, device: torch.device, dtype: torch.dtype) -> StableAudio3Parts:
    """Every part with diffusers' and transformers' own classes, each failure one line naming the part."""
    from diffusers import AutoencoderSAME, StableAudio3DiTModel
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder
    from transformers import AutoTokenizer, T5GemmaEncoderModel

    config = read_config(folder)
    tokenizer = load_part(AutoTokenizer.from_pretrained, folder / "tokenizer", "tokenizer")
    text_encoder = load_part(T5GemmaEncoderModel.from_pretrained, folder / "text_encoder", "text encoder")
    seconds = load_part(StableAudio3DurationEmbedder.from_pretrained, folder / "duration_embedder",
                        "duration embedder")
    transformer = load_part(lambda path: StableAudio3DiTModel.from_pretrained(path, torch_dtype=dtype),
                            folder / "transformer", "transformer")
    vae = load_part(AutoencoderSAME.from_pretrained, folder / "vae", "autoencoder")
    parts = StableAudio3Parts(config, tokenizer, text_encoder.eval(), seconds.eval(), transformer.eval(), vae.eval())
    return parts.to(device, dtype)
