"""MusicGen's request values, without torch: its options (defaults, how each shell offers them) and their
checks, which tunesmith.request.check_request runs for MusicGen models and the engine reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..params import Asked, Option, audio_input, real, refuse, whole

if TYPE_CHECKING:
    import numpy as np

    from ..audio.meter import Meter

MAX_SEED = 2**31 - 1
CONTEXT = 12.0  # long pieces: seconds of the piece so far that condition each new window
WINDOW_SECONDS = 30.0  # MusicGen was trained on 30 s windows
CFG_BETA = 5.0  # MusicGen-Style's double guidance with text and style (audiocraft's demo, mlx-audiogen's default)
STYLE_EXCERPT = (1.5, 4.5)  # seconds: the lengths MusicGen-Style was trained on
STYLE_QUANTIZERS = 6

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


@dataclass(frozen=True)
class StyleRequest:
    """A style reference and its options; None: the checkpoint's own default."""

    audio: tuple[np.ndarray, int]  # (audio (channels, samples) float32, rate)
    cfg_beta: float = CFG_BETA  # with text: uncond + cfg * (style + cfg_beta * (cond - style) - uncond)
    excerpt: float | None = None  # seconds of the reference the model hears
    quantizers: int | None = None  # style codebooks used: fewer copy the reference less closely
    start: float | None = None  # where the excerpt starts (seconds); None: drawn from each clip's seed


_STYLE = "MusicGen-Style"
# Its own generate options (None: the checkpoint's own default, or off) and how each shell offers them.
PARAMS = {
    "temperature": Option(SamplingParams.temperature, "--temperature", score=True, compat="temperature",
                          help=f"0 is greedy (default: {SamplingParams.temperature:g})"),
    "top_k": Option(SamplingParams.top_k, "--top-k", "whole", score=True, compat="top_k",
                    help=f"0 disables (default: {SamplingParams.top_k})"),
    "top_p": Option(SamplingParams.top_p, "--top-p", score=True,
                    help=f"0 disables (default: {SamplingParams.top_p:g})"),
    "cfg": Option(SamplingParams.cfg, "--cfg", score=True, compat="guidance_coef",
                  help=f"classifier-free guidance, 1 disables (default: {SamplingParams.cfg:g})"),
    "context": Option(CONTEXT, "--context", "seconds", score=True, about="MusicGen, long pieces",
                      help=f"long pieces: seconds of the piece so far that condition each new window "
                           f"(default: {CONTEXT:g})"),
    "melody": Option(None, "--melody", "audio", metavar="FILE", needs="melody", compat="melody_path",
                     about="an upload id: a tune to follow (melody models)",
                     help="a tune to follow (melody models: -m melody, melody-large, stereo-melody, ...)"),
    "style": Option(None, "--style", "audio", metavar="FILE", steers=True, needs="style",
                    compat="style_audio_path", about=f"{_STYLE}: an upload id, the reference whose style to take",
                    help="take the timbre, groove and texture of this reference (style models: -m style); "
                         "PROMPT may then be left out"),
    "cfg_beta": Option(None, "--cfg-beta", needs="style", modifies="style", compat="style_coef",
                       about=f"{_STYLE}: weight of the text against the style",
                       help=f"with --style and a PROMPT: how much more the text steers than the style "
                            f"(default: {CFG_BETA:g})"),
    "style_excerpt": Option(None, "--style-excerpt", needs="style", modifies="style",
                            about=f"{_STYLE}: seconds of the reference heard",
                            help="with --style: seconds of the reference the model hears, 1.5 to 4.5 (default: 3)"),
    "style_quantizers": Option(None, "--style-quantizers", "whole", needs="style", modifies="style",
                               about=f"{_STYLE}: 1-6, fewer copy it less closely",
                               help="with --style: style codebooks used, 1 to 6 (default: 3); fewer copy it less "
                                    "closely"),
    "style_start": Option(None, "--style-start", needs="style", modifies="style",
                          about=f"{_STYLE}: where the excerpt starts (s)",
                          help="with --style: where the excerpt starts, in seconds (default: drawn from the seed)"),
}
OPTIONS = {name: option.default for name, option in PARAMS.items()}


def check(asked: Asked, *, temperature, top_k, top_p, cfg, context, melody, style, cfg_beta, style_excerpt,
          style_quantizers, style_start) -> dict:
    """MusicGen's options checked -> the Request's fields of its own."""
    if asked.loop and asked.audio_prompt is not None:
        raise refuse("a loop cannot continue an audio prompt: use one or the other")
    sampling = SamplingParams(
        temperature=real(temperature, "temperature", "a number >= 0 (0 is greedy)", lambda v: v >= 0),
        top_k=whole(top_k, "top_k", "a whole number >= 0 (0 is off)", lambda v: v >= 0),
        top_p=real(top_p, "top_p", "between 0 (off) and 1", lambda v: 0 <= v <= 1),
        cfg=real(cfg, "cfg", "between 1 (no guidance) and 100", lambda v: 1 <= v <= 100))
    context = real(context, "context", f"greater than 0 and less than the {WINDOW_SECONDS:g} s window",
                   lambda v: 0 < v < WINDOW_SECONDS)
    return dict(sampling=sampling, context=context, audio_prompt=audio_input(asked.audio_prompt, "audio_prompt"),
                melody=audio_input(melody, "melody"),
                style=_style_request(style, cfg_beta, style_excerpt, style_quantizers, style_start))


def _style_request(style, cfg_beta, style_excerpt, style_quantizers, style_start) -> StyleRequest | None:
    given = {"cfg_beta": cfg_beta, "style_excerpt": style_excerpt, "style_quantizers": style_quantizers,
             "style_start": style_start}
    if style is None:
        extra = next((k for k, v in given.items() if v is not None), None)
        if extra:
            raise refuse(f"{{{extra}}} applies to a style reference, given as {{style}}: there is none",
                                   extra)
        return None
    if style_excerpt is not None:
        low, high = STYLE_EXCERPT
        style_excerpt = real(style_excerpt, "style_excerpt", f"between {low:g} and {high:g} seconds",
                             lambda v: low <= v <= high)
    if style_quantizers is not None:
        style_quantizers = whole(style_quantizers, "style_quantizers", f"a whole number from 1 to {STYLE_QUANTIZERS}",
                                 lambda v: 1 <= v <= STYLE_QUANTIZERS)
    if style_start is not None:
        style_start = real(style_start, "style_start", "a number of seconds >= 0", lambda v: v >= 0)
    beta = CFG_BETA if cfg_beta is None else real(cfg_beta, "cfg_beta", "between 1 and 100", lambda v: 1 <= v <= 100)
    return StyleRequest(audio_input(style, "style"), beta, style_excerpt, style_quantizers, style_start)


def meter_prompt(text: str, meter: Meter) -> str:
    """Tempo and key written into a prompt as MusicGen was trained on them: audiocraft's MusicDataset merges
    a track's metadata into its description as "<description>. key: <key>. bpm: <bpm>" (fields joined by
    ". ", bpm a float). The meter is no field of it: it only sets the bars' length."""
    fields = [f"key: {meter.key}"] if meter.key else []
    if meter.bpm is not None:
        fields.append(f"bpm: {float(meter.bpm)}")
    return ". ".join([text.rstrip().rstrip("."), *fields] if text.strip() else fields)
