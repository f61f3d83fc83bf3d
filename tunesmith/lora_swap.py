"""Per-request LoRA adapters on a loaded model (the server's jobs): one adapter set merged at a time, swapped
for another without reloading the model, and reverted exactly.

Two forms, after what the model computes with:

- live weights (the GPU paths, the float32 CPU path without packing): the set is merged into those weights
  (lora.merge, keep=True) and reverted by copying back the touched weights kept before it: bit for bit the
  base again, never a subtraction.
- derived weights (the CPU paths that pack, cast to bfloat16 or quantize to int8/int4 at load): the float32
  weights of the layers adapters can reach are kept as loaded (the base, never changed); a set is merged into
  float32 copies of the weights it touches and the family re-derives (packs, quantizes) those from them, and
  the weights the previous set touched and this one does not are re-derived from the base: never from a
  merged or quantized copy, so a swap back gives the derived weights of a model loaded with that set.

Either way the adapters are read and checked against the model (lora.fit) before anything changes: a refused
set leaves the model running the set it had.
"""

from __future__ import annotations

from typing import Callable

from .lora import AdapterSpec, Merged, Target, fit, merge, parse_specs, read_adapters, stamp


def key_of(specs: list[AdapterSpec]) -> tuple:
    """What makes two adapter sets the same: the files, as they are on disk now (an adapter file replaced in
    place is merged again), and the scales, in order."""
    return tuple((str(spec.path), spec.scale, stamp(spec.path)) for spec in specs)


class AdapterSwap:
    """The adapter set a model runs with, swappable.

    locate, shapes, model: as lora.fit takes them. Live form: weights (name -> the tensor the model computes
    with). Derived form: base (name -> float32 tensor as loaded, kept unchanged) and install(values), which
    re-derives the model's run-time weights from `values` (name -> float32 tensor) for every name in it."""

    def __init__(self, locate: Callable[[str], Target | None], shapes: dict[str, tuple[int, int]], model: str,
                 weights: dict | None = None, base: dict | None = None, install: Callable[[dict], None] | None = None):
        if (weights is None) == (base is None) or (base is not None and install is None):
            raise ValueError("AdapterSwap takes live weights, or a base and an install function")
        self.locate, self.shapes, self.model = locate, shapes, model
        self.weights, self.base, self.install = weights, base, install
        self.specs: list[AdapterSpec] = []
        self._key: tuple = ()  # key_of(self.specs) when they were merged
        self._merged: Merged | None = None  # live form: what to revert
        self._touched: set[str] = set()  # derived form: the weights installed from a merge
        self.merges = 0  # sets merged so far (the tests and logs read it: a same set is not merged again)

    @property
    def derived(self) -> bool:
        return self.base is not None

    def use(self, lora) -> bool:
        """Run with this adapter set from now on (lora.parse_specs' forms; None or []: the base model).
        Returns whether anything changed (the same set again: nothing is merged)."""
        specs = parse_specs(lora)
        key = key_of(specs)
        if key == self._key:
            return False
        patches = fit(read_adapters(specs), self.locate, self.shapes, self.model) if specs else []
        if self.derived:
            names = {p.target.weight for p in patches}
            values = {name: self.base[name].clone() for name in names}  # float32, the base untouched
            merge(values, patches)
            values.update({name: self.base[name] for name in self._touched - names})  # back to the base
            self.install(values)
            self._touched = names
        else:
            if self._merged is not None:
                self._merged.revert(self.weights)
                self._merged = None
            self._merged = merge(self.weights, patches, keep=True)
        self.specs, self._key = specs, key
        self.merges += bool(specs)
        return True
