"""The starting noise of the diffusion families: one draw per batch row from its own CPU generator, as
diffusers' pipelines draw with a list of CPU generators, so that a row's seed gives the same noise in
any batch and on any device."""

from __future__ import annotations

import torch


def seeded_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per row, seeded with its seed."""
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def row_noise(gens: list[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    """One standard normal draw of `shape` per row from its own generator: [B, *shape] on the CPU."""
    return torch.cat([torch.randn((1, *shape), generator=g) for g in gens])
