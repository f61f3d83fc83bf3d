"""tunesmith score: music generated (or given) under videos, the picture untouched."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from ..errors import InvalidParameter
from ..params import shown_seconds
from .flags import (check_capabilities, check_lora, check_quantize, describe_model, finishing_of, load_model,
                    meter_of, options_of)
from .outputs import make_folder, say_failed_check

log = logging.getLogger("tunesmith")


def cmd_score(args) -> int:
    import time

    from ..audio.checks import check_audio
    from ..audio.io import read_audio, resample
    from ..clip import Clip
    from ..request import check_request
    from ..video.score import VIDEO_RATE, check_original_gain, mux, plan_jobs

    videos, prompt = videos_and_prompt(args.inputs, args.audio is not None)
    check_original_gain(args.original_gain, "--original-gain")
    jobs = plan_jobs(videos, args.output, args.overwrite)
    finishing = [finishing_of(args, job.video.duration) for job in jobs]
    requests = [None] * len(jobs)
    if args.audio is None:  # every value checked before the model loads, as for generate
        def check(family: str, longest: float | None, turbo: bool = False):
            return [check_request(prompt, family=family, longest=longest, duration=job.video.duration, seed=args.seed,
                                  turbo=turbo, **meter_of(args), **options_of(args, family))
                    for job in jobs]

        check_lora(args)
        spec = describe_model(args, check)
        check_quantize(args, spec.family)
        check_capabilities(args, spec)
        check_lora(args, spec.family)
        for job in jobs:
            if spec.longest is not None and job.video.duration > spec.longest:
                raise InvalidParameter(f"{job.video.path} lasts {job.video.duration:.2f} s, longer than the "
                                       f"{shown_seconds(spec.longest)} s {args.model} makes at once: score it with a "
                                       "MusicGen model (long pieces), or give a track with --audio")
        requests = check(spec.family, spec.longest, spec.turbo)
    track = read_audio(args.audio) if args.audio else None
    if track is not None:
        track_check = check_audio(track[0])  # a given track is judged as a generated one is
        if not track_check.ok:
            log.warning("%s failed the output check: %s: it is scored as given (finishing removes a DC offset)",
                        args.audio, track_check.summary())

    model = None
    timings = []
    for job, finish, request in zip(jobs, finishing, requests):
        seconds = job.video.duration
        started = time.perf_counter()
        if track is None:
            if model is None:
                model = load_model(args, spec)
            clip, = model.generate_request(request, progress=not args.quiet)
            if not clip.check.ok:  # the raw clip, as generate judges it; finishing could hide a fault
                say_failed_check(job.output, clip.check)
        else:
            audio, rate = track
            if audio.shape[1] < round(seconds * rate):
                log.warning("%s is shorter than %s: the rest is silence", args.audio, job.video.path)
            clip = Clip(audio, rate, "", 0, check=track_check)
        generated = time.perf_counter()
        finished = clip.finish(**finish, length=seconds)
        audio = resample(finished.audio, finished.sample_rate, VIDEO_RATE)
        done_finishing = time.perf_counter()
        make_folder(job.output.parent)
        mux(job, audio, VIDEO_RATE, args.original, args.original_gain, finish["ceiling"], finish["loudness"])
        done = time.perf_counter()
        print(job.output)
        if track is None:
            log.info("%s: seed %d", job.output, clip.seed)
        timings.append((job.video.path.name, seconds, generated - started, done_finishing - generated,
                        done - done_finishing))
    _print_timings(timings, "loading + generation" if track is None else "reading the track")
    return 0


def videos_and_prompt(inputs: list[str], track: bool) -> tuple[list[str], str | None]:
    """score's arguments as generate takes its words: the leading arguments that exist as files are the videos,
    the remaining words form the prompt (none with --audio). A first argument that is no file is a video
    still (plan_jobs says it does not exist)."""
    from ..video.score import AUDIO_CODECS

    count = next((i for i, word in enumerate(inputs) if not Path(word).is_file()), len(inputs)) or 1
    videos, words = inputs[:count], inputs[count:]
    if track:
        if words:
            raise InvalidParameter(f"with --audio TRACK, give only videos: {words[0]} is not a file")
        return videos, None
    if not words:
        last = Path(videos[-1])
        if len(videos) > 1 and last.suffix.lower() in AUDIO_CODECS:
            raise InvalidParameter(f"the last argument must be the prompt, not a video ({last})")
        raise InvalidParameter('give the video(s) and then a prompt, e.g. tunesmith score reel.mp4 calm pads, '
                               'or --audio TRACK')
    stray = next((w for w in words if Path(w).suffix.lower() in AUDIO_CODECS and Path(w).is_file()), None)
    if stray is not None:
        raise InvalidParameter(f"the videos come first, then the prompt: {stray} follows the prompt's words")
    return videos, " ".join(words)


def _print_timings(rows, first_stage: str):
    width = max(len(r[0]) for r in rows)
    lines = [f"{'video':<{width}}  {'length':>7}  {first_stage:>20}  {'finishing':>9}  {'mux':>6}"]
    for name, length, gen, fin, mux_s in rows:
        lines.append(f"{name:<{width}}  {length:>6.1f}s  {gen:>19.1f}s  {fin:>8.2f}s  {mux_s:>5.2f}s")
    print("\n".join(lines), file=sys.stderr)
