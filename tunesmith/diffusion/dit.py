"""What the diffusion families' CPU DiTs share: they stay on the CPU, take and return float32 (the
time steps keep their precision; the products run in each one's compute dtype), and compute the
cross-attention keys and values once per conditioning."""

from __future__ import annotations

import torch
from torch import nn


class CPUTransformer(nn.Module):
    """Base of stable_audio/cpu.py's and acestep/cpu.py's DiTCPU. A subclass sets self.blocks and
    defines project_context(states) -> the states its blocks' cross-attention reads."""

    blocks: list  # each with .context(projected) -> (k, v)

    def __init__(self):
        super().__init__()
        self._context_of = None  # (condition states, [(k, v) per block])

    @property
    def dtype(self) -> torch.dtype:
        """What it takes and returns (callers cast their inputs to the model's dtype)."""
        return torch.float32

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, *args, **kwargs) -> "CPUTransformer":
        """Stays as it was made: the CPU, its dtypes. A move to another device is refused."""
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError("a CPU DiT runs on the CPU only: load the pipeline again for another device")
        return self

    def project_context(self, states: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def context(self, encoder_hidden_states: torch.Tensor) -> list:
        """[(k, v) per block] of these condition states: kept with a copy of the states and reused while
        states of equal values come back (every step of a sampling loop; comparing costs microseconds)."""
        states = encoder_hidden_states.float()
        cached = self._context_of
        if cached is not None and cached[0].shape == states.shape and torch.equal(cached[0], states):
            return cached[1]
        projected = self.project_context(states)
        kv = [block.context(projected) for block in self.blocks]
        self._context_of = (states.clone(), kv)
        return kv
