"""Per-request LoRA adapters on a loaded model (the server's jobs): one adapter set merged at a time, swapped
for another without reloading the model, and reverted exactly.

Two forms, after what the model computes with:

- live weights (the GPU paths, the float32 CPU path without packing): the set is merged into those weights
  and reverted by copying back the touched weights kept before it: bit for bit the base again, never a
  subtraction.
- derived weights (the CPU paths that pack, cast to bfloat16 or quantize to int8/int4 at load): the float32
  weights of the layers adapters can reach are kept as loaded (the base, never changed); a set is merged into
  float32 copies of the weights it touches and the family re-derives (packs, quantizes) those from them, and
  the weights the previous set touched and this one does not are re-derived from the base: never from a
  merged or quantized copy, so a swap back gives the derived weights of a model loaded with that set.

What a family's adapters are is a Merger: how a set is read and checked against the model, which weights it
touches, and how it is merged into them. peft_merger is lora.py's (PEFT folders and ComfyUI files: MusicGen,
ACE-Step); Stable Audio 3 brings its own (Stability's LoRA/DoRA files, stable_audio3/adapters.py). Either way
the adapters are read and checked (place) before anything changes: a refused set leaves the model running the
set it had.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

from .lora import AdapterSpec, fit, merge, parse_specs, read_adapters, stamp


def key_of(specs: list[AdapterSpec]) -> tuple:
    """What makes two adapter sets the same: the files, as they are on disk now (an adapter file replaced in
    place is merged again), the scales and intervals, in order."""
    return tuple((str(spec.path), spec.scale, spec.interval, stamp(spec.path)) for spec in specs)


@dataclass(frozen=True)
class Merger:
    """A family's adapters. place(specs) -> patches: the set read and checked against the model (one line when
    it does not fit; nothing changed yet). touched(patches) -> the names of the weights they change.
    merge(weights, patches): the patches added, in order, to those weights (name -> tensor, changed in place;
    sums in float32, rounded once to each weight's dtype). shapes: the (out, in) of the weights lora.fit checks a
    set against (what a server records to check a job's set at submit); None where the family checks its own."""

    place: Callable[[list[AdapterSpec]], list]
    touched: Callable[[list], set[str]]
    merge: Callable[[dict, list], None]
    shapes: dict[str, tuple[int, int]] | None = None


def peft_merger(locate, shapes: dict[str, tuple[int, int]], model: str) -> Merger:
    """lora.py's adapters (PEFT folders, ComfyUI files) on weights named as locate places them; shapes and
    model as lora.fit takes them."""
    return Merger(place=lambda specs: fit(read_adapters(specs), locate, shapes, model),
                  touched=lambda patches: {p.target.weight for p in patches},
                  merge=lambda weights, patches: merge(weights, patches), shapes=shapes)


class Offloaded(Mapping):
    """A derived form's base kept in host memory (name -> float32 CPU tensor), each weight brought to `device`
    when a set touches it: the merge runs where a load-time merge runs, the device holds no float32 copy."""

    def __init__(self, host: dict, device):
        self.host, self.device = host, device

    def __getitem__(self, name: str):
        return self.host[name].to(self.device)

    def __iter__(self):
        return iter(self.host)

    def __len__(self) -> int:
        return len(self.host)


class AdapterSwap:
    """The adapter set a model runs with, swappable.

    merger: the family's adapters (Merger). Live form: weights (name -> the tensor the model computes with).
    Derived form: base (name -> float32 tensor as loaded, kept unchanged) and install(values), which re-derives
    the model's run-time weights from `values` (name -> float32 tensor) for every name in it."""

    def __init__(self, merger: Merger, weights: dict | None = None, base: Mapping | None = None,
                 install: Callable[[dict], None] | None = None):
        if (weights is None) == (base is None) or (base is not None and install is None):
            raise ValueError("AdapterSwap takes live weights, or a base and an install function")
        self.merger = merger
        self.weights, self.base, self.install = weights, base, install
        self.specs: list[AdapterSpec] = []
        self._key: tuple = ()  # key_of(self.specs) when they were merged
        self._kept: dict = {}  # live form: the touched weights as they were before the merge, to copy back
        self._touched: set[str] = set()  # derived form: the weights installed from a merge
        self.merges = 0  # sets merged so far (the tests and logs read it: a same set is not merged again)

    @property
    def derived(self) -> bool:
        return self.base is not None

    @property
    def shapes(self) -> dict[str, tuple[int, int]] | None:
        return self.merger.shapes

    def use(self, lora) -> bool:
        """Run with this adapter set from now on (lora.parse_specs' forms; None or []: the base model).
        Returns whether anything changed (the same set again: nothing is merged)."""
        import torch

        specs = parse_specs(lora)
        key = key_of(specs)
        if key == self._key:
            return False
        patches = self.merger.place(specs) if specs else []
        names = self.merger.touched(patches)
        with torch.no_grad():
            if self.derived:
                values = {name: self.base[name].clone() for name in names}  # float32, the base untouched
                self.merger.merge(values, patches)
                values.update({name: self.base[name] for name in self._touched - names})  # back to the base
                self.install(values)
                self._touched = names
            else:
                for name, kept in self._kept.items():  # the base again, bit for bit
                    self.weights[name].data.copy_(kept)
                self._kept = {name: self.weights[name].detach().clone() for name in names}
                self.merger.merge(self.weights, patches)
        self.specs, self._key = specs, key
        self.merges += bool(specs)
        return True
