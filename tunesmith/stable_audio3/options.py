"""Stable Audio 3's request values, without torch: its options (defaults, how each shell offers them) and
their checks, which tunesmith.request.check_request runs for Stable Audio 3 models.

Its audio input (audio_prompt, --init-audio) is an init audio to transform (strength) or repaint (repaint
spans); continuation (--continue) is audio to keep whole and extend to the duration, the total length."""

from __future__ import annotations

from dataclasses import replace

from ..params import Asked, Option, audio_input, one_text, real, refuse, shown_seconds
from ..stable_audio import options as stable_audio_options
from ..stable_audio.options import DiffusionParams

_SAO = stable_audio_options.PARAMS
# Its own generate options (None: the checkpoint's own default, read when it loads) and how each shell
# offers them: Stable Audio's where the meaning is the same.
PARAMS = {
    "steps": replace(_SAO["steps"], help="sampler steps (default: sa3-small/-medium 8, ping-pong; their -base "
                                         "checkpoints 100, Euler)"),
    "cfg": replace(_SAO["cfg"], help="guidance, 1 disables (default: the checkpoint's; 1 for post-trained ones)"),
    "negative_prompt": _SAO["negative_prompt"],
    "strength": _SAO["strength"],
    "repaint": Option(None, "--repaint", "spans", metavar="START:END",
                      about="Stable Audio 3: [start, end] seconds of the init audio (continuation) to make anew, or "
                            "a list of such spans (end null: to the end); the rest is kept",
                      help="with --init-audio: make these seconds anew and keep the rest (4:8; 4: to the end); "
                           "repeat for several spans"),
    "continuation": Option(None, "--continue", "audio", metavar="FILE", field="extend",
                           about="Stable Audio 3: an upload id, audio to keep whole and extend to duration (the "
                                 "total length)",
                           help="extend this audio, kept whole, to -d seconds in total"),
}
OPTIONS = {name: option.default for name, option in PARAMS.items()}


def clip_length(audio_prompt, duration, longest: float | None, loop, options: dict) -> tuple:
    """The audio a request starts from, read and checked -> (audio, the clip's duration): an init audio
    without a duration lasts as long as the audio; a continuation extends to the duration given."""
    if options["continuation"] is not None:
        return _continuation_source(options, audio_prompt, duration, loop), duration
    if audio_prompt is None:
        return None, duration
    source = audio_input(audio_prompt, "audio_prompt", "init_audio")
    if duration is not None:
        return source, duration
    seconds = source[0].shape[1] / source[1]
    if longest is not None and seconds > longest + 1e-9:
        raise refuse("{audio_prompt} lasts {seconds:.2f} s, longer than the {longest} s this model makes at "
                     "once: give a {duration} to use its beginning", "audio_prompt", seconds=seconds,
                     longest=shown_seconds(longest))
    return source, seconds


def _continuation_source(options: dict, audio_prompt, duration, loop) -> tuple:
    """The audio to extend, read and checked: it goes alone, and the total length is given."""
    other = next((name for name in ("repaint", "strength") if options[name] is not None), None)
    if audio_prompt is not None or other is not None:
        raise refuse("{continuation} extends its audio and keeps it whole: it does not go with {%s}"
                     % (other or "audio_prompt"), "continuation")
    if loop:
        raise refuse("a loop cannot extend audio: use one or the other")
    if duration is None:
        raise refuse("{continuation} needs the total length to extend it to: give it as {duration}", "continuation")
    return audio_input(options["continuation"], "continuation", "audio_prompt")


def check(asked: Asked, *, steps, cfg, negative_prompt, strength, repaint, continuation) -> dict:
    """Stable Audio 3's options checked -> the Request's fields of its own (its audio input: an init audio,
    or the continuation, that clip_length has read)."""
    one_text(asked.schedules, "Stable Audio 3 models take one text per clip")
    sao = stable_audio_options.check(replace(asked, audio_prompt=None), steps=steps, cfg=cfg,
                                     negative_prompt=negative_prompt, sampler=None, strength=None)
    init, duration = asked.audio_prompt, asked.duration
    if strength is not None:
        strength = real(strength, "strength", "between 0 (keep the init audio) and 1 (ignore it)",
                        lambda v: 0 <= v <= 1)
        if init is None:
            raise refuse("{strength} applies to an init audio, given as {audio_prompt}: there is none", "strength")
    diffusion = replace(sao["diffusion"], strength=strength)
    if continuation is not None:  # outpainting: the span after the audio made anew, the audio kept
        seconds = init[0].shape[1] / init[1]
        if seconds >= duration:
            raise refuse("{continuation} lasts {seconds:.2f} s: the {duration} of {total:g} s leaves nothing to add "
                         "(it is the total length)", "continuation", seconds=seconds, total=duration)
        repaint = (seconds, duration)
    if repaint is not None:
        diffusion = replace(diffusion, repaint=_repaint_spans(repaint, duration, init, asked.loop, strength))
    return dict(sampling=None, context=0.0, audio_prompt=init, diffusion=diffusion)


def _repaint_spans(repaint, duration: float, init, loop: bool, strength) -> tuple[tuple[float, float], ...]:
    """The spans to make anew: (start, end) or a list of them, each inside the clip (end None: the clip's
    end) -> ((start, end), ...) in order."""
    if init is None:
        raise refuse("{repaint} needs the audio to repaint: give it as {audio_prompt} FILE", "repaint")
    if loop:
        raise refuse("a loop cannot repaint audio: use one or the other")
    if strength is not None:
        raise refuse("{strength} is for audio-to-audio; a repaint keeps the audio outside its spans and makes the "
                     "spans anew: use one or the other", "strength")
    expected = "a start and an end in seconds (no end: to the end of the clip), or a list of such spans"
    one = isinstance(repaint, (list, tuple)) and len(repaint) == 2 and not isinstance(repaint[0], (list, tuple))
    spans = [repaint] if one else repaint
    if not isinstance(spans, (list, tuple)) or not spans or not all(
            isinstance(span, (list, tuple)) and len(span) == 2 for span in spans):
        raise refuse("{repaint} must be {expected}, got {value!r}", "repaint", expected=expected, value=repaint)
    checked = []
    for start, end in spans:
        start = real(start, "repaint", f"{expected}; each start a number >= 0", lambda v: v >= 0)
        end = duration if end is None else real(end, "repaint", f"{expected}; each end a number", lambda v: v >= 0)
        if start >= duration or end > duration + 0.01:
            raise refuse("{repaint} span {start:g}:{end:g} s is not inside the {duration_s:g} s clip", "repaint",
                         start=start, end=end, duration_s=duration)
        if end <= start:
            raise refuse("{repaint} span {start:g}:{end:g} s ends before it starts", "repaint", start=start, end=end)
        checked.append((start, min(end, duration)))
    return tuple(sorted(checked))
