"""Where MusicGen LoRA adapters land: the decoder LM's linear weights (lm.py's MusicGenLM).

Adapters are read in PEFT form over transformers' MusicGen, the names its fine-tuning tools write
(`base_model.model.decoder.model.decoder.layers.{i}.self_attn.q_proj.lora_A.weight` over the whole
MusicgenForConditionalGeneration, `...model.decoder.layers.{i}...` over the decoder alone). Our LM fuses
some of those linears, so a layer may write a block of rows of one weight:

    self_attn.{q,k,v}_proj -> layers.{i}.attn.qkv    rows [0, D), [D, 2D), [2D, 3D)
    self_attn.out_proj     -> layers.{i}.attn.out
    encoder_attn.q_proj    -> layers.{i}.cross.q
    encoder_attn.{k,v}_proj-> layers.{i}.cross.kv    rows [0, D), [D, 2D)
    encoder_attn.out_proj  -> layers.{i}.cross.out
    fc1, fc2               -> layers.{i}.fc1, fc2
    lm_heads.{k}           -> heads                  rows [k V, (k + 1) V)
    enc_to_dec_proj        -> text_proj
"""

from __future__ import annotations

import re

import torch

from ..lora import Target
from .config import DecoderConfig

PREFIXES = ("base_model.model.",)
LAYER = re.compile(r"(?:decoder\.model\.decoder|model\.decoder|decoder)\.layers\.(?P<i>\d+)\."
                   r"(?:(?P<attn>self_attn|encoder_attn)\.(?P<proj>q|k|v|out)_proj|(?P<fc>fc1|fc2))")
HEAD = re.compile(r"(?:decoder\.)?lm_heads\.(?P<k>\d+)")


def locator(cfg: DecoderConfig):
    """-> locate(adapter layer name) -> Target or None, for a decoder of this config."""
    return locator_for(cfg.dim, cfg.vocab_size)


def locator_for(dim: int, vocab_size: int):
    """locator() from the two sizes it needs (the family table's lora_locator: a server checks a job's
    adapters with it, from what the loaded model recorded, lora.Fitting)."""
    D, V = int(dim), int(vocab_size)

    def locate(name: str) -> Target | None:
        for prefix in PREFIXES:
            name = name.removeprefix(prefix)
        if name in ("enc_to_dec_proj", "decoder.enc_to_dec_proj"):
            return Target("text_proj.weight")
        head = HEAD.fullmatch(name)
        if head:
            k = int(head["k"])
            return Target("heads.weight", (k * V, (k + 1) * V))
        m = LAYER.fullmatch(name)
        if m is None:
            return None
        layer = f"layers.{m['i']}."
        if m["fc"]:
            return Target(layer + f"{m['fc']}.weight")
        proj, self_attn = m["proj"], m["attn"] == "self_attn"
        if proj == "out":
            return Target(layer + ("attn.out.weight" if self_attn else "cross.out.weight"))
        if self_attn:
            j = "qkv".index(proj)
            return Target(layer + "attn.qkv.weight", (j * D, (j + 1) * D))
        if proj == "q":
            return Target(layer + "cross.q.weight")
        j = "kv".index(proj)
        return Target(layer + "cross.kv.weight", (j * D, (j + 1) * D))

    return locate


def lm_weights(lm: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The LM's 2-D weights by name (on the meta device: their shapes, before any is read)."""
    return {name: p for name, p in lm.named_parameters() if p.dim() == 2 and name != "embed"}


def swap_of(model, device: torch.device, quantize: str | None):
    """A loaded model's (loader.LoadedModel) AdapterSwap: derived from its float32 base when load_folder kept
    one (packed or quantized step linears), else on its live weights."""
    from ..lora_swap import AdapterSwap, peft_merger
    from .linear import install_weights, specialiser

    locate, what = locator(model.config.decoder), "this MusicGen decoder"
    if model.base is None:
        weights = lm_weights(model.lm)
        return AdapterSwap(peft_merger(locate, {n: tuple(w.shape) for n, w in weights.items()}, what),
                           weights=weights)
    make = specialiser(model.lm, device, quantize)
    return AdapterSwap(peft_merger(locate, {n: tuple(w.shape) for n, w in model.base.items()}, what),
                       base=model.base, install=lambda values: install_weights(model.lm, values, make))
