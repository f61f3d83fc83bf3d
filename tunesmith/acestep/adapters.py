"""Where ACE-Step 1.5 LoRA adapters land: the DiT's (diffusers AceStepTransformer1DModel's) linear weights.

ACE-Step's trainer adapts the DiT decoder's attention (q_proj, k_proj, v_proj, o_proj; the MLP's gate_proj,
up_proj, down_proj when asked) and writes PEFT keys `base_model.model.layers.{i}.{self_attn|cross_attn}.
{q_proj|...}.lora_A.weight`; ComfyUI's files the same under `diffusion_model.decoder.` (or `diffusion_model.`);
diffusers' own under `transformer.` with its names (to_q, to_k, to_v, to_out.0). All map to the one weight
name of the diffusers module, and anything else (the condition encoder's layers, say) is refused by name.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..lora import Target

PREFIXES = ("base_model.model.", "diffusion_model.", "transformer.", "decoder.")  # stripped in this order
RENAMES = {"q_proj": "to_q", "k_proj": "to_k", "v_proj": "to_v", "o_proj": "to_out.0"}  # ACE-Step's -> diffusers'
LAYER = re.compile(r"layers\.\d+\.(?:(?:self_attn|cross_attn)\.(?:to_q|to_k|to_v|to_out\.0)|"
                   r"mlp\.(?:gate_proj|up_proj|down_proj))")


def locate(name: str) -> Target | None:
    """An adapter's layer name -> the DiT weight it updates (whole), or None."""
    for prefix in PREFIXES:
        name = name.removeprefix(prefix)
    *path, last = name.split(".")
    name = ".".join([*path, RENAMES.get(last, last)])
    return Target(name + ".weight") if LAYER.fullmatch(name) else None


def locator():
    """locate itself: its names need no size (the family table's lora_locator)."""
    return locate


def dit_shapes(folder: Path) -> dict[str, tuple[int, int]]:
    """(out, in) of every linear weight of the folder's DiT, from its config alone: the module is built on
    the meta device, so an adapter is checked before any weight is read."""
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel

    from ..quiet import quiet_loading

    with quiet_loading(), torch.device("meta"):
        dit = AceStepTransformer1DModel.from_config(AceStepTransformer1DModel.load_config(folder / "transformer"))
    return linear_shapes(dit)


def linear_shapes(dit: torch.nn.Module) -> dict[str, tuple[int, int]]:
    return {f"{name}.weight": tuple(m.weight.shape) for name, m in dit.named_modules() if isinstance(m, torch.nn.Linear)}


def dit_weights(dit: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The DiT's linear weights by name, as `merge` changes them."""
    return {f"{name}.weight": m.weight for name, m in dit.named_modules() if isinstance(m, torch.nn.Linear)}
