"""tunesmith generate: prompts in, audio files out (and their stems with --stems)."""

from __future__ import annotations

import logging

from ..errors import InvalidParameter, ModelNotFound, TunesmithError
from .flags import (audio_prompt_of, check_capabilities, check_lora, check_quantize, describe_model, finishing_of,
                    finishing_requested, load_model, meter_of, options_of)
from .outputs import make_folder, plan_outputs, plan_stems, say_failed_check, say_ignored_wav_format, write_stems
from .parser import EXIT_CHECK_FAILED

log = logging.getLogger("tunesmith")


def prompts_of(args) -> list:
    """The prompts of a generate command line: words without quotes form one prompt, --text adds more,
    --prompt SECONDS:TEXT entries form one schedule."""
    if len(args.words) > 1 and any(len(w.split()) > 1 for w in args.words):
        raise InvalidParameter("several quoted prompts: words without quotes form one prompt; for several "
                               'prompts in one batch, give each with --text "..."')
    texts = ([" ".join(args.words)] if args.words else []) + args.text
    if args.schedule and texts:
        raise InvalidParameter("give either PROMPT text or --prompt SECONDS:TEXT entries, not both")
    if not args.schedule and not texts and getattr(args, "style", None) is not None:
        return [""]  # the style alone steers
    if not args.schedule and not texts:
        raise InvalidParameter('give a PROMPT, e.g. tunesmith generate "calm lofi piano, 80 bpm"')
    return [args.schedule] if args.schedule else texts


def cmd_generate(args) -> int:
    from ..request import check_request

    # Every value and input file is checked, and every output path decided, before the model loads.
    def check(family: str, longest: float | None, turbo: bool = False):
        return check_request(prompts_of(args), family=family, longest=longest, duration=args.duration, seed=args.seed,
                             num_variations=args.variations, audio_prompt=audio_prompt_of(args, family),
                             loop=args.loop, turbo=turbo, **meter_of(args), **options_of(args, family))

    check_lora(args)  # its files, before the model is looked up
    spec = describe_model(args, check)
    request = check(spec.family, spec.longest, spec.turbo)
    check_quantize(args, spec.family)
    check_capabilities(args, spec)
    check_lora(args, spec.family)
    if args.loop and (args.fade_in or args.fade_out):
        raise InvalidParameter("fades would break a seamless loop: use --loop without --fade-in/--fade-out")
    paths = plan_outputs(args.output, [(s[0][1], seed) for s, seed in request.rows], args.overwrite)
    say_ignored_wav_format(args.wav_format, paths)
    finishing = finishing_of(args, request.duration)
    stem_model, stem_paths = None, [{} for _ in paths]
    if args.stems_model is not None and not args.stems:
        raise InvalidParameter("--stems-model chooses the model of --stems: add --stems")
    if args.stems:  # the stems model is loaded, and every stem's file checked, before any generation
        from ..hub import naming_folder_flag
        from ..stems import load_stem_model, separate

        try:
            stem_model = load_stem_model(args.stems_model or "htdemucs", device=args.device)
        except ModelNotFound as err:  # its hint names --stems-model, not generate's -m
            raise naming_folder_flag(err, "--stems-model") from None
        stem_paths = [plan_stems(path, stem_model.sources, args.overwrite, taken=set(paths)) for path in paths]
    model = load_model(args, spec)
    clips = model.generate_request(request, progress=not args.quiet)
    failed = 0
    for clip, path, stem_files in zip(clips, paths, stem_paths):
        if finishing_requested(finishing):
            clip = clip.finish(**finishing)
        make_folder(path.parent)
        clip.save(path, wav_format=args.wav_format)
        print(path)
        if stem_model is not None:
            try:
                stems = separate(clip, model=stem_model, progress=not args.quiet)
            except TunesmithError as err:  # a silent clip has nothing to separate: the others still do
                log.warning("no stems for %s: %s", path, err)
            else:
                write_stems(stems, stem_files, args.wav_format)
        if not clip.check.ok:
            failed += 1
            say_failed_check(path, clip.check, args.strict)
        tempo = "" if clip.check.tempo is None else f", tempo {clip.check.tempo:.1f} bpm (detected)"
        if len(clips) > 1:
            log.info("%s: seed %d, %r%s", path, clip.seed, clip.prompt, tempo)
        else:
            log.info("seed %d%s", clip.seed, tempo)
    return EXIT_CHECK_FAILED if failed and args.strict else 0
