"""Stable Audio's request values, without torch: its options (defaults, how each shell offers them) and
their checks, which tunesmith.request.check_request runs for Stable Audio models."""

from __future__ import annotations

from dataclasses import dataclass

from ..params import MAX_STEPS, Asked, Option, audio_input, check_text, one_text, real, refuse, whole


@dataclass(frozen=True)
class DiffusionParams:
    """Stable Audio's options; None means the model's own default (steps and guidance differ by model)."""

    steps: int | None = None
    cfg: float | None = None  # guidance: uncond + cfg * (cond - uncond); 1 is off
    negative_prompt: str | None = None  # what to steer away from (the unconditioned side of guidance)
    sampler: str | None = None
    strength: float | None = None  # audio-to-audio: 0 keeps the init audio, 1 ignores it
    repaint: tuple[tuple[float, float], ...] | None = None  # Stable Audio 3: (start, end) spans of the init
    #   audio, in seconds, to make anew; the rest is kept


# Its own generate options (None: the checkpoint's own default, read when it loads) and how each shell
# offers them.
PARAMS = {
    "steps": Option(None, "--steps", "whole", score=True, compat="steps",
                    help="sampler steps (default: sao 100, sao-small 8)"),
    "cfg": Option(None, "--cfg", score=True, compat="cfg_scale",
                  help="guidance, 1 disables (default: sao 7, sao-small 1)"),
    "negative_prompt": Option(None, "--negative", "text", metavar="TEXT", score=True, max_length=100_000,
                              compat="negative_prompt",
                              help="what the sound should not be (with guidance above 1)"),
    "sampler": Option(None, "--sampler", "text", metavar="NAME", score=True, max_length=100,
                      compat="sampler",
                      help="sao dpmpp-2m-sde; sao-small pingpong (default) or euler"),
    "strength": Option(None, "--strength", modifies="audio_prompt", compat="reference_strength",
                       about="Stable Audio, with continuation as init audio",
                       help="with --init-audio: 0 keeps the sound, 1 ignores it (default: 0.7)"),
}
OPTIONS = {name: option.default for name, option in PARAMS.items()}


def check(asked: Asked, *, steps, cfg, negative_prompt, sampler, strength) -> dict:
    """Stable Audio's options checked -> the Request's fields of its own (its audio input: an init audio)."""
    one_text(asked.schedules, "Stable Audio models take one text per clip")
    init = audio_input(asked.audio_prompt, "audio_prompt", "init_audio")
    if steps is not None:
        steps = whole(steps, "steps", f"a whole number from 1 to {MAX_STEPS}", lambda v: 1 <= v <= MAX_STEPS)
    if cfg is not None:
        cfg = real(cfg, "cfg", "between 1 (no guidance) and 100", lambda v: 1 <= v <= 100)
    check_text(negative_prompt, "negative_prompt")
    check_text(sampler, "sampler")
    if negative_prompt is not None:
        if not isinstance(negative_prompt, str):
            raise refuse("{negative_prompt} must be a text, got {value!r}", "negative_prompt",
                                   value=negative_prompt)
        negative_prompt = negative_prompt if negative_prompt.strip() else None  # empty: no negative prompt
    if sampler is not None and not isinstance(sampler, str):
        raise refuse("{sampler} must be a sampler's name, got {value!r}", "sampler", value=sampler)
    if strength is not None:
        strength = real(strength, "strength", "between 0 (keep the init audio) and 1 (ignore it)",
                        lambda v: 0 <= v <= 1)
        if init is None:
            raise refuse("{strength} applies to an init audio, given as {audio_prompt}: there is none",
                                   "strength")
    return dict(sampling=None, context=0.0, audio_prompt=init,
                diffusion=DiffusionParams(steps, cfg, negative_prompt, sampler, strength))


def meter_prompt(text: str, meter) -> str:
    """Tempo and key written into a prompt as Stable Audio Open's captions carry them (Freesound's texts and
    Stability's own examples: "128 BPM tech house drum loop"): "<prompt>, 124 BPM, C major"."""
    return ", ".join([text.rstrip().rstrip(","), *([f"{meter.bpm:g} BPM"] if meter.bpm is not None else []),
                      *([meter.key] if meter.key else [])])
