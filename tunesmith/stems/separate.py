"""Splitting audio into stems with a Demucs bag: the model runs at its own rate and channels (44.1 kHz
stereo), the stems come back at the input's.

Segmenting is demucs' `apply_model` (overlapping segments of the model's length, blended with a
triangular window, computed one at a time, so the model's memory does not grow with the input), with
the mix normalised as `demucs.api` does. What tunesmith adds is around it: reading and resampling with
soxr, widening mono and folding back, seeded shifts, a (done, total) progress hook and Clips."""

from __future__ import annotations

import contextlib
import math
import random
from pathlib import Path
from typing import Callable

import numpy as np

from ..audio.checks import check_audio
from ..audio.io import resample
from ..clip import Clip
from ..errors import InvalidParameter, TunesmithError
from ..generation import progress_reporter
from ..hub import licence_of
from ..request import audio_input, named, whole
from .load import StemModel, load_stem_model

OVERLAP = 0.25  # of a segment, shared with the next (apply_model's default)
MAX_SHIFT_SECONDS = 0.5  # apply_model shifts the input by up to this much per pass
MAX_SHIFTS = 20


def separate(audio, model: str | Path | StemModel = "htdemucs", device: str = "auto", shifts: int = 1,
             two_stems: str | None = None, progress: bool | Callable[[int, int], None] = False,
             seed: int = 0) -> dict[str, Clip]:
    """Split music into stems: {"drums": Clip, "bass": Clip, "other": Clip, "vocals": Clip} (htdemucs_6s
    adds "guitar" and "piano"), each at the input's sample rate, length and channel count.

    audio: a file path, a Clip or (array, sample_rate); mono or stereo.
    model: htdemucs (default), htdemucs_ft (a bag of four fine-tuned models: four times slower, a little
        cleaner), htdemucs_6s, a folder in their hub layout (NAME.yaml, SIG.safetensors), or a StemModel
        from tunesmith.stems.load_stem_model (loaded once for many calls; `device` is then its own).
    shifts: passes over the input, each shifted by a random offset up to 0.5 s, averaged: better
        separation for `shifts` times the work (0: one pass, no shift).
    two_stems: a stem name: that stem and "no_<name>", the sum of the others (e.g. vocals, no_vocals).
    progress: True for a progress bar on stderr, or a callable (done, total) over the model's segments.
    seed: the shifts' offsets; the same seed gives the same stems.
    """
    source = audio_input(audio, "audio")
    shifts = whole(shifts, "shifts", f"a whole number from 0 to {MAX_SHIFTS}", lambda v: 0 <= v <= MAX_SHIFTS)
    seed = whole(seed, "seed", "a whole number", lambda v: True)
    if not (isinstance(progress, bool) or callable(progress)):
        raise InvalidParameter("progress must be True, False or a callable (done, total)")
    mix, rate = source
    if mix.shape[0] > 2:
        raise InvalidParameter(f"stems are made of mono or stereo audio, not {mix.shape[0]} channels")
    if two_stems is not None and not isinstance(two_stems, str):
        raise InvalidParameter(f"{named('two_stems')} must be a stem name, got {two_stems!r}")
    stem_model = model if isinstance(model, StemModel) else load_stem_model(model, device)
    check_two_stems(two_stems, stem_model.sources)
    report = progress_reporter(progress, desc="separating", unit="segment")
    try:
        at_model_rate = to_model(mix, rate, stem_model)
        stems = run_bag(stem_model, at_model_rate, shifts, seed, report)  # (sources, 2, samples)
    finally:
        if hasattr(report, "close"):
            report.close()
    named_stems = dict(zip(stem_model.sources, stems))
    if two_stems is not None:
        chosen = named_stems.pop(two_stems)
        named_stems = {two_stems: chosen, f"no_{two_stems}": sum(named_stems.values())}
    prompt, clip_seed, params = _origin(audio)
    settings = dict(stems_model=stem_model.name, shifts=shifts, seed=seed, two_stems=two_stems,
                    licence=licence_of(stem_model.name))
    clips = {}
    for name, stem in named_stems.items():
        back = from_model(stem, stem_model.sample_rate, rate, mix.shape)
        clips[name] = Clip(back, rate, prompt, clip_seed, {**params, "stem": name, "stems": settings},
                           check_audio(back))
    return clips


def check_two_stems(two_stems: str | None, sources: list[str]):
    if two_stems is not None and two_stems not in sources:
        raise InvalidParameter(f"{named('two_stems')} must be one of this model's stems ({', '.join(sources)}), "
                               f"got {two_stems!r}")


def _origin(audio) -> tuple[str, int, dict]:
    """The prompt, seed and parameters a stem inherits: its clip's, or the file it came from."""
    if isinstance(audio, Clip):
        return audio.prompt, audio.seed, dict(audio.params)
    if isinstance(audio, (str, Path)):
        return "", 0, {"source": str(audio)}
    return "", 0, {}


def to_model(mix: np.ndarray, rate: int, stem_model: StemModel) -> np.ndarray:
    """(1 or 2, samples) at `rate` -> (model channels, samples) at the model's rate; mono is widened."""
    out = resample(mix, rate, stem_model.sample_rate)
    if out.shape[0] < stem_model.channels:
        out = np.repeat(out, stem_model.channels // out.shape[0], axis=0)
    return np.ascontiguousarray(out, dtype=np.float32)


def from_model(stem: np.ndarray, model_rate: int, rate: int, shape: tuple[int, int]) -> np.ndarray:
    """A stem (model channels, samples) -> the input's (channels, samples) at its rate; mono folds back
    by averaging (a widened mono input gives identical channels, so nothing is lost)."""
    out = resample(stem, model_rate, rate)
    channels, length = shape
    if channels == 1:
        out = out.mean(axis=0, keepdims=True)
    if out.shape[1] < length:  # soxr rounds the length; pad or cut to the input's exactly
        out = np.pad(out, ((0, 0), (0, length - out.shape[1])))
    return np.ascontiguousarray(out[:, :length], dtype=np.float32)


def segments_total(stem_model: StemModel, length: int, shifts: int) -> int:
    """Segments apply_model runs over `length` samples: the progress bar's total. With shifts each pass
    runs over the input plus up to 0.5 s, so this counts the longest case; the bar ends at the total."""
    total = 0
    span = length + (int(MAX_SHIFT_SECONDS * stem_model.sample_rate) if shifts else 0)
    for sub in stem_model.bag.models:
        segment_length = int(stem_model.sample_rate * float(sub.segment))
        stride = int((1 - OVERLAP) * segment_length)
        total += math.ceil(span / stride) * max(shifts, 1)
    return total


@contextlib.contextmanager
def _seeded_random(seed: int):
    """apply_model draws its shifts from Python's global `random`: seed it, then put its state back."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def run_bag(stem_model: StemModel, mix: np.ndarray, shifts: int, seed: int, report=None) -> np.ndarray:
    """(channels, samples) at the model's rate -> (sources, channels, samples), as demucs.api separates:
    the mix normalised by its mean and deviation, apply_model, then scaled back."""
    import torch
    from demucs.apply import apply_model

    wav = torch.from_numpy(mix)
    ref = wav.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    total = segments_total(stem_model, wav.shape[-1], shifts)
    done = 0

    def on_segment(info: dict):
        nonlocal done
        if info.get("state") == "end" and report is not None:
            done = min(done + 1, total)
            report(done, total)

    try:
        with _seeded_random(seed), torch.inference_mode():
            out = apply_model(stem_model.bag, ((wav - mean) / std)[None], shifts=shifts, split=True,
                              overlap=OVERLAP, device=stem_model.device, callback=on_segment)
            out = out[0].mul_(std).add_(mean)  # in place: the stems are the largest buffer of a long file
    except RuntimeError as err:
        if "out of memory" in str(err).lower():
            raise TunesmithError(f"separation ran out of memory on {stem_model.device}: try --device cpu") from None
        raise
    if report is not None:
        report(total, total)
    return out.numpy()
