"""What the families loaded from diffusers pipeline folders share: the folder's index, each part loaded
with one line for any failure (and diffusers' and transformers' loading chatter kept quiet)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CheckpointError
from ..quiet import quiet_loading


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} cannot be read ({err})") from None


def read_pipeline_index(folder: Path, pipeline_class: str, parts: tuple[str, ...]) -> dict:
    """model_index.json of a `pipeline_class` folder that holds every one of `parts`' folders."""
    index = read_json(folder / "model_index.json")
    article = "an" if pipeline_class[0] in "AEIOU" else "a"
    if index.get("_class_name") != pipeline_class:
        raise CheckpointError(f"{folder} holds a diffusers {index.get('_class_name')}, not {article} {pipeline_class}")
    missing = [p for p in parts if not (folder / p).is_dir()]
    if missing:
        raise CheckpointError(f"{folder} lacks the {', '.join(missing)} folder(s) of {article} {pipeline_class}")
    return index


def load_part(loader, path: Path, what: str):
    """loader(path), any failure one line that names the part and the folder."""
    try:
        with quiet_loading():
            return loader(path)
    except Exception as err:  # diffusers and transformers raise many kinds for a broken folder
        text = str(err).strip().splitlines()
        raise CheckpointError(f"the {what} in {path} cannot be loaded ({text[0] if text else type(err).__name__})") \
            from None


def check_oobleck(vae: dict, path: Path, latent_dim: int | None = None, maker: str = "transformer"):
    """An Oobleck VAE's config (diffusers' AutoencoderOobleck) whose parts agree, read before any weights: its
    encoder makes encoder_hidden_size / 2 latent channels (a mean and a scale each), its decoder takes
    decoder_input_channels, and `maker` (the DiT, when latent_dim is given) makes latent_dim. Otherwise the
    first song through both would fail with a tensor-size error; here the part is named."""
    encoded, decoded = int(vae.get("encoder_hidden_size", 128)), int(vae.get("decoder_input_channels", 64))
    if encoded != 2 * decoded:
        raise CheckpointError(f"the VAE in {path} is malformed: its encoder makes {encoded / 2:g} latent channels "
                              f"(encoder_hidden_size {encoded}), its decoder takes {decoded} (decoder_input_channels)")
    if latent_dim is not None and latent_dim != decoded:
        raise CheckpointError(f"the {maker} and the VAE in {path.parent} disagree: the {maker} makes {latent_dim} "
                              f"latent channels, the VAE's decoder takes {decoded}")
