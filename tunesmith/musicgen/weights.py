"""Checkpoint (transformers layout) -> our modules.

The decoder goes through one explicit key map: every target tensor names its source keys, every
checkpoint key must be used, and every shape is checked. The text encoder (T5) and the codec
(EnCodec) are transformers modules loaded from their prefixes of the same checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from ..errors import CheckpointError
from .config import DecoderConfig

DEC = "decoder.model.decoder."


def decoder_key_map(cfg: DecoderConfig) -> dict[str, tuple[list[str], str]]:
    """Our parameter name -> (checkpoint keys, how to join them: 'one', 'cat' on dim 0, or 'stack')."""
    K = range(cfg.n_codebooks)
    m = {
        "embed": ([f"{DEC}embed_tokens.{k}.weight" for k in K], "stack"),
        "heads.weight": ([f"decoder.lm_heads.{k}.weight" for k in K], "cat"),
        "norm.weight": ([f"{DEC}layer_norm.weight"], "one"),
        "norm.bias": ([f"{DEC}layer_norm.bias"], "one"),
    }
    if cfg.text_proj:
        m["text_proj.weight"] = (["enc_to_dec_proj.weight"], "one")
        m["text_proj.bias"] = (["enc_to_dec_proj.bias"], "one")
    if cfg.melody and cfg.chroma_proj:
        m["chroma_proj.weight"] = (["audio_enc_to_dec_proj.weight"], "one")
        m["chroma_proj.bias"] = (["audio_enc_to_dec_proj.bias"], "one")
    for i in range(cfg.n_layers):
        src, dst = f"{DEC}layers.{i}.", f"layers.{i}."
        m[dst + "attn.qkv.weight"] = ([src + f"self_attn.{p}_proj.weight" for p in "qkv"], "cat")
        m[dst + "attn.out.weight"] = ([src + "self_attn.out_proj.weight"], "one")
        m[dst + "fc1.weight"] = ([src + "fc1.weight"], "one")
        m[dst + "fc2.weight"] = ([src + "fc2.weight"], "one")
        norms = [("attn_norm", "self_attn_layer_norm"), ("mlp_norm", "final_layer_norm")]
        if not cfg.prefix:  # melody and style decoders have no cross-attention
            m[dst + "cross.q.weight"] = ([src + "encoder_attn.q_proj.weight"], "one")
            m[dst + "cross.kv.weight"] = ([src + f"encoder_attn.{p}_proj.weight" for p in "kv"], "cat")
            m[dst + "cross.out.weight"] = ([src + "encoder_attn.out_proj.weight"], "one")
            norms.append(("cross_norm", "encoder_attn_layer_norm"))
        for ours, theirs in norms:
            m[dst + f"{ours}.weight"] = ([src + f"{theirs}.weight"], "one")
            m[dst + f"{ours}.bias"] = ([src + f"{theirs}.bias"], "one")
    return m


def unreadable(path: Path, err: OSError) -> CheckpointError:
    """The OS's reason with the path: a file we may not read is no cause to download it again."""
    return CheckpointError(f"cannot read {path}: {(err.strerror or str(err)).lower()}")


class Checkpoint:
    """Lazy tensor access over the weight files of a transformers checkpoint folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._where: dict[str, Path] = {}
        self._open: dict[Path, object] = {}
        files = self._weight_files()
        for path in files:
            for key in self._keys_of(path):
                self._where[key] = path

    def _weight_files(self) -> list[Path]:
        for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                                   ("pytorch_model.bin.index.json", "pytorch_model.bin")):
            index = self.folder / index_name
            if index.exists():
                try:
                    names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
                except OSError as err:
                    raise unreadable(index, err) from None
                except (ValueError, KeyError) as err:
                    raise CheckpointError(f"{index} is not a valid weight index ({err})") from None
                missing = [n for n in names if not (self.folder / n).exists()]
                if missing:
                    raise CheckpointError(f"checkpoint in {self.folder} is incomplete: missing {', '.join(missing)}")
                return [self.folder / n for n in names]
            if (self.folder / single).exists() or (self.folder / single).is_symlink():  # a broken link: say so
                return [self.folder / single]
        raise CheckpointError(f"no model.safetensors or pytorch_model.bin in {self.folder}")

    def _handle(self, path: Path):
        if path not in self._open:
            try:
                open(path, "rb").close()  # the OS's own reason first: safetensors garbles some (chmod 000)
            except OSError as err:
                raise unreadable(path, err) from None
            try:
                if path.suffix == ".safetensors":
                    from safetensors import safe_open

                    self._open[path] = safe_open(str(path), framework="pt")
                else:
                    self._open[path] = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except OSError as err:
                raise unreadable(path, err) from None
            except Exception as err:  # damaged files raise many error types; all mean the same to a user
                raise CheckpointError(
                    f"checkpoint file {path} is damaged or incomplete ({type(err).__name__}); "
                    "delete it and download it again") from None
        return self._open[path]

    def _keys_of(self, path: Path) -> Iterator[str]:
        handle = self._handle(path)
        return iter(handle.keys())

    def keys(self) -> set[str]:
        return set(self._where)

    def get(self, key: str) -> torch.Tensor:
        handle = self._handle(self._where[key])
        try:
            return handle.get_tensor(key) if hasattr(handle, "get_tensor") else handle[key]
        except Exception as err:
            raise CheckpointError(f"cannot read tensor {key} from {self._where[key]} ({err})") from None

    def close(self):
        self._open.clear()


def _check_shape(name: str, tensor: torch.Tensor, expected: torch.Size):
    if tensor.shape != expected:
        raise CheckpointError(f"checkpoint tensor for {name} has shape {tuple(tensor.shape)}, expected {tuple(expected)}")


def load_decoder(module: nn.Module, ckpt: Checkpoint, cfg: DecoderConfig, dtype: torch.dtype,
                 key_map: dict[str, tuple[list[str], str]] | None = None, buffers: bool = False) -> set[str]:
    """Fill `module` (built on the meta device) from the checkpoint. Returns the checkpoint keys used.

    key_map: another layout's map (audiocraft's); buffers: the map fills the module's buffers too."""
    expected = {name: p.shape for name, p in module.named_parameters()}
    if buffers:
        expected |= {name: b.shape for name, b in module.named_buffers()}
    key_map = key_map or decoder_key_map(cfg)
    if set(key_map) != set(expected):
        raise AssertionError(f"key map out of date: {sorted(set(key_map) ^ set(expected))}")
    available = ckpt.keys()
    state, used = {}, set()
    for name, (sources, join) in key_map.items():
        missing = [s for s in sources if s not in available]
        if missing:
            raise CheckpointError(f"checkpoint lacks {missing[0]} (needed for the decoder)")
        shape = expected[name]
        part_shape = {"one": shape, "stack": shape[1:], "cat": (shape[0] // len(sources), *shape[1:])}[join]
        parts = []
        for source in sources:
            parts.append(ckpt.get(source))
            _check_shape(source, parts[-1], torch.Size(part_shape))
        tensor = parts[0] if join == "one" else torch.cat(parts) if join == "cat" else torch.stack(parts)
        state[name] = tensor.to(dtype)
        used.update(sources)
    module.load_state_dict(state, strict=False, assign=True)
    return used


def _legacy_weight_norm(key: str) -> str:
    """Checkpoints saved before torch parametrizations name weight norm parts weight_g / weight_v."""
    if key.endswith(".weight_g"):
        return key[: -len("weight_g")] + "parametrizations.weight.original0"
    if key.endswith(".weight_v"):
        return key[: -len("weight_v")] + "parametrizations.weight.original1"
    return key


def load_submodule(module: nn.Module, ckpt: Checkpoint, prefix: str, what: str,
                   rename: Callable[[str], str] = lambda k: k, tied: dict[str, str] | None = None) -> set[str]:
    """Load a transformers module from the checkpoint keys under `prefix`; every key must match.

    `tied` maps a module key to the key it shares its tensor with (T5's embed_tokens -> shared).
    """
    expected = module.state_dict()
    ours = {rename(k[len(prefix):]): k for k in ckpt.keys() if k.startswith(prefix)}
    tied = tied or {}
    unexpected = sorted(set(ours) - set(expected))
    if unexpected:
        raise CheckpointError(f"unexpected {what} tensor in checkpoint: {prefix}{unexpected[0]}")
    state = {}
    for name, ref in expected.items():
        source = ours.get(name) or ours.get(tied.get(name, ""))
        if source is None:
            raise CheckpointError(f"checkpoint lacks {prefix}{name} (needed for the {what})")
        tensor = ckpt.get(source)
        _check_shape(source, tensor, ref.shape)
        state[name] = tensor.to(ref.dtype if ref.dtype.is_floating_point else tensor.dtype)
    on_meta = any(t.is_meta for t in expected.values())
    module.load_state_dict(state, strict=True, assign=on_meta)
    return set(ours.values())


def encodec_rename(key: str) -> str:
    return _legacy_weight_norm(key)


T5_TIED = {"encoder.embed_tokens.weight": "shared.weight"}
