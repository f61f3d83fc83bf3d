"""Tiny LoRA adapters made with peft itself, written in the forms tunesmith reads: a PEFT folder
(adapter_config.json + adapter_model.safetensors) and a single ComfyUI-style file with .alpha tensors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def peft_layers(module: torch.nn.Module, targets: list[str], rank: int, alpha: float, seed: int,
                size: float = 0.3) -> dict[str, torch.Tensor]:
    """peft's LoRA on a copy of `module` (random A and B, B scaled by `size` so the update is noticeable but
    sane) -> its state dict as peft saves it: `<module path>.lora_A.weight` / `.lora_B.weight`."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=False)
    model = inject_adapter_in_model(config, copy.deepcopy(module))
    state = get_peft_model_state_dict(model)
    return {k: (v * size if ".lora_B." in k else v).contiguous() for k, v in state.items()}


def write_peft_folder(folder: Path, layers: dict[str, torch.Tensor], rank: int, alpha: float,
                      targets: list[str], prefix: str = "base_model.model.", **config) -> Path:
    """A PEFT folder as save_pretrained writes it: prefixed keys and the config beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({prefix + k: v for k, v in layers.items()}, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps(dict(
        peft_type="LORA", r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, bias="none",
        use_rslora=False, use_dora=False, **config)))
    return folder


def write_single_file(path: Path, layers: dict[str, torch.Tensor], alpha: float | None,
                      prefix: str = "base_model.model.", dtype=torch.bfloat16) -> Path:
    """One safetensors file, ComfyUI's form: the layers in `dtype` and, unless alpha is None, a `.alpha`
    scalar per layer."""
    tensors = {prefix + k: v.to(dtype) for k, v in layers.items()}
    if alpha is not None:
        for key in layers:
            if ".lora_A." in key:
                tensors[prefix + key.split(".lora_A.")[0] + ".alpha"] = torch.tensor(float(alpha))
    save_file(tensors, str(path))
    return path
