"""MusicGen's request values, without torch: what tunesmith.request checks and the engine reads."""

from __future__ import annotations

from dataclasses import dataclass

MAX_SEED = 2**31 - 1
CONTEXT = 12.0  # long pieces: seconds of the piece so far that condition each new window

Schedule = list[tuple[float, str]]  # (start second, text), sorted by start


@dataclass(frozen=True)
class SamplingParams:
    """MusicGen's sampling; its defaults are the API's, the CLI's and the server's."""

    temperature: float = 1.0  # 0 means greedy
    top_k: int = 250  # 0 disables
    top_p: float = 0.0  # 0 disables; applied after top-k
    cfg: float = 3.0  # classifier-free guidance scale; 1 disables
    # MusicGen-Style's second coefficient, set only when both text and style condition the piece: three
    # rows per prompt (text+style, style only, neither) instead of two. None: ordinary guidance.
    cfg_beta: float | None = None

    @property
    def rows(self) -> int:
        """Batch rows per prompt in the decoder: 1 without guidance, 2 with, 3 with two coefficients."""
        return 1 if self.cfg <= 1 else 2 if self.cfg_beta is None else 3


# Its own generate options -> default (None: the checkpoint's own, or off).
OPTIONS = dict(temperature=SamplingParams.temperature, top_k=SamplingParams.top_k, top_p=SamplingParams.top_p,
               cfg=SamplingParams.cfg, context=CONTEXT, melody=None, style=None, cfg_beta=None, style_excerpt=None,
               style_quantizers=None, style_start=None)
