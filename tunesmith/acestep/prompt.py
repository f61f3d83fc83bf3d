"""The texts ACE-Step's encoders read, written as AceStepPipeline writes them for text2music and repaint.

The caption goes into the SFT template (instruction, caption, metadata); the lyrics get a language
header. The text encoder was trained on exactly these layouts, newlines included.
"""

from __future__ import annotations

from ..audio.meter import Meter

INSTRUCTION = "Fill the audio semantic mask based on the given conditions:"  # text2music
REPAINT = "Repaint the mask area based on the given conditions:"
END = "<|endoftext|>"


def caption_text(caption: str, duration: float, instruction: str = INSTRUCTION, meter: Meter | None = None) -> str:
    """The text encoder's input: bpm, time signature (beats a bar: "4") and key ("F# minor") from the meter,
    each "N/A" (left to the model) when not given; the duration in whole seconds, as the pipeline writes it."""
    meter = meter or Meter()
    bpm = "N/A" if meter.bpm is None else f"{meter.bpm:g}"
    signature = "N/A" if meter.time_signature is None else str(meter.time_signature)
    key = meter.key or "N/A"
    metas = f"- bpm: {bpm}\n- timesignature: {signature}\n- keyscale: {key}\n- duration: {int(duration)} seconds\n"
    return f"# Instruction\n{instruction}\n\n# Caption\n{caption}\n\n# Metas\n{metas}{END}\n"


def lyrics_text(lyrics: str, language: str) -> str:
    """The lyric encoder's input; empty lyrics make an instrumental."""
    return f"# Languages\n{language}\n\n# Lyric\n{lyrics}{END}"
