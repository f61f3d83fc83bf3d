"""MusicGen's request values, without torch: what tunesmith.request checks and the engine reads."""

from __future__ import annotations

from dataclasses import dataclass

from ..audio.meter import OPTIONS as METER_OPTIONS
from ..audio.meter import Meter

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
               style_quantizers=None, style_start=None, **METER_OPTIONS)


def meter_prompt(text: str, meter: Meter) -> str:
    """Tempo and key written into a prompt as MusicGen was trained on them: audiocraft's MusicDataset merges
    a track's metadata into its description as "<description>. key: <key>. bpm: <bpm>" (fields joined by
    ". ", bpm a float). The meter is no field of it: it only sets the bars' length."""
    fields = [f"key: {meter.key}"] if meter.key else []
    if meter.bpm is not None:
        fields.append(f"bpm: {float(meter.bpm)}")
    return ". ".join([text.rstrip().rstrip("."), *fields] if text.strip() else fields)
