"""tunesmith stems: music split into drums, bass, other and vocals (or two stems)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidParameter, TunesmithError
from .outputs import make_folder, plan_stems, say_ignored_wav_format, write_stems


def cmd_stems(args) -> int:
    from ..request import audio_input
    from ..stems import load_stem_model, separate

    # The input is read, the model loaded and every output checked before separating.
    source = audio_input(args.input, "audio")
    if not 0 <= args.shifts <= 20:
        raise InvalidParameter(f"--shifts must be a whole number from 0 to 20, got {args.shifts}")
    folder = Path(args.output) if args.output else Path(args.input).parent
    if folder.exists() and not folder.is_dir():
        raise TunesmithError(f"{folder} is a file: -o takes a folder for the stems")
    if not folder.exists() and not folder.parent.is_dir():
        raise TunesmithError(f"output folder {folder} does not exist, nor does its parent")
    model = load_stem_model(args.model, device=args.device)
    if args.two_stems is not None and args.two_stems not in model.sources:
        raise InvalidParameter(f"--two-stems must be one of this model's stems ({', '.join(model.sources)}), "
                               f"got {args.two_stems!r}")
    names = model.sources if args.two_stems is None else [args.two_stems, f"no_{args.two_stems}"]
    paths = plan_stems(folder / f"{Path(args.input).stem}.{args.format}", names, args.overwrite)
    say_ignored_wav_format(args.wav_format, list(paths.values()))
    stems = separate(source, model=model, shifts=args.shifts, two_stems=args.two_stems, progress=not args.quiet)
    make_folder(folder)
    write_stems(stems, paths, args.wav_format)
    return 0
