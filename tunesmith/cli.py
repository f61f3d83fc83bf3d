"""The tunesmith command. It only calls the public API; every failure is one line on stderr."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import sys
from pathlib import Path

from .errors import InvalidParameter, TunesmithError

log = logging.getLogger("tunesmith")

EXIT_ERROR, EXIT_USAGE, EXIT_CHECK_FAILED = 1, 2, 3
OUTPUT_FORMATS = (".wav", ".flac", ".mp3", ".ogg", ".m4a")  # audio.io.FORMATS, without importing it here


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        self.exit(EXIT_USAGE, f"tunesmith: error: {message} (see '{self.prog} --help')\n")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of seconds") from None
    return value


def _span(text: str) -> tuple[float, float | None]:
    """--repaint START:END in seconds; END left out is the end of the song ("30:"), START left out 0."""
    start, sep, end = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return float(start) if start.strip() else 0.0, float(end) if end.strip() else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not START:END in seconds (e.g. 30:45, or 30: to the end "
                                         "of the song)") from None


def _schedule_entry(text: str) -> tuple[float, str]:
    start, sep, prompt = text.partition(":")
    try:
        seconds = float(start)
    except ValueError:
        seconds = float("nan")
    if not sep or not prompt.strip() or seconds != seconds:
        raise argparse.ArgumentTypeError(f"'{text}' is not SECONDS:TEXT (e.g. '45:drums enter')")
    return seconds, prompt.strip()


# What each kind of option value is on the command line (tunesmith.params.KINDS): its converter and metavar.
KIND_TYPES = {"number": float, "seconds": _seconds, "whole": int, "text": None, "audio": None, "span": _span,
              "textfile": None}
KIND_METAVARS = {"audio": "FILE", "textfile": "FILE", "span": "START:END", "text": "TEXT"}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="tunesmith", description="Describe music in words, get audio. Local MusicGen, "
                                                   "Stable Audio Open and ACE-Step.")
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = sub.add_parser("generate", help="generate music from a text prompt")
    gen.add_argument("words", nargs="*", metavar="PROMPT",
                     help="what the music should be; words without quotes form one prompt")
    common = gen.add_argument_group("common options")
    common.add_argument("--text", action="append", default=[], metavar="TEXT",
                        help="one more prompt, generated in the same batch; repeat for several")
    common.add_argument("--prompt", action="append", dest="schedule", metavar="SECONDS:TEXT", type=_schedule_entry,
                        help="a prompt that starts at SECONDS; repeat for a piece whose prompt changes over time")
    _add_model(common)
    common.add_argument("--threads", type=int, default=None, help="CPU threads (default: one per core)")
    common.add_argument("-d", "--duration", type=_seconds, default=None,
                        help="seconds of audio (default: 10; ACE-Step: 10 to 600; with --repaint: the song's length)")
    common.add_argument("-n", "--variations", type=int, default=1, help="variations of each prompt (default: 1)")
    common.add_argument("--loop", action="store_true", help="a seamless loop of exactly the duration")
    add_family_options(gen, common, "generate")
    _add_finishing(gen, fade_out=0.0, loudness=None)
    output = gen.add_argument_group("output")
    output.add_argument("-o", "--output", default=None,
                        help="output file (.wav, .flac, .mp3, .ogg, .m4a) or folder; several clips get -1, -2, ... "
                             "suffixes")
    output.add_argument("--wav-format", choices=["pcm16", "pcm24", "float"], default="pcm16",
                        help="WAV sample format (default: pcm16)")
    output.add_argument("--strict", action="store_true", help="exit with status 3 if a clip fails the output check")
    output.add_argument("--stems", action="store_true",
                        help="also split each clip into stems: NAME-drums.wav, NAME-bass.wav, ... beside it")
    output.add_argument("--stems-model", default=None, metavar="MODEL",
                        help="with --stems: htdemucs (default), htdemucs_ft, htdemucs_6s or a folder")
    _add_output_policy(output)

    score = sub.add_parser("score", help="put generated (or given) music under videos, picture untouched")
    score.add_argument("inputs", nargs="+", metavar="VIDEO... PROMPT",
                       help="one or more videos, then the prompt (no prompt with --audio)")
    common = score.add_argument_group("common options")
    score.add_argument("--audio", default=None, metavar="TRACK", help="score with this audio file instead")
    _add_model(common)
    add_family_options(score, common, "score")
    _add_finishing(score, fade_out=1.0, loudness=-14.0)
    output = score.add_argument_group("output")
    output.add_argument("-o", "--output", default=None,
                        help="output video (one input) or folder (default: NAME-scored.EXT beside each input)")
    output.add_argument("--original", choices=["replace", "under", "over"], default="replace",
                        help="the video's own audio: replace it (default), keep it under or over the music")
    output.add_argument("--original-gain", type=float, default=-12.0,
                        help="dB for the quieter of the two when mixing, -60 to 0 (default: -12)")
    _add_output_policy(output)

    serve = sub.add_parser("serve", help="an HTTP job server: an API for DAW plugins and apps, a page at /")
    serve.add_argument("-m", "--model", action="append", dest="models", default=None, metavar="MODEL",
                       help="a model to offer: alias, hub id or checkpoint folder; repeat for several, the first "
                            "is the default (default: small)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, this machine only; others need --token)")
    serve.add_argument("--port", type=int, default=8420, help="port (default: 8420, as mlx-audiogen's clients expect)")
    serve.add_argument("--data", default=None, metavar="DIR",
                       help="folder for the job store and audio (default: a per-user data folder; $TUNESMITH_DATA)")
    serve.add_argument("--max-queue", type=int, default=100, help="jobs queued or running at most; more get 429")
    serve.add_argument("--loaded", type=int, default=2, help="models kept in memory at once (default: 2)")
    serve.add_argument("--media-dir", action="append", default=[], metavar="DIR",
                       help="a folder whose files clients may name (melody_path, ...); repeat for several")
    serve.add_argument("--token", default=os.environ.get("TUNESMITH_TOKEN"),
                       help="clients must send 'Authorization: Bearer TOKEN' (default: $TUNESMITH_TOKEN); "
                            "required to listen beyond 127.0.0.1")
    serve.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                       help="a web page origin (https://example.com) allowed to use the API; repeat for several")
    serve.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    serve.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    serve.add_argument("--max-batch", type=int, default=16, help="clips generated together at most (default: 16)")
    serve.add_argument("--keep-days", type=float, default=7.0,
                       help="finished jobs are deleted after this many days (unread ones live a day at least)")
    serve.add_argument("--keep-jobs", type=int, default=1000, help="finished jobs kept at most (default: 1000)")
    serve.add_argument("--repair-store", action="store_true",
                       help="a damaged job store is kept as jobs.sqlite3.damaged-DATE and a fresh one begun "
                            "(without it the server refuses to start)")

    stems = sub.add_parser("stems", help="split music into stems: drums, bass, other, vocals")
    stems.add_argument("input", metavar="FILE", help="the music to split (any audio file ffmpeg reads)")
    stems.add_argument("-o", "--output", metavar="DIR", default=None,
                       help="folder for the stems, FILE's name then the stem: DIR/NAME-drums.wav, ... "
                            "(default: beside FILE; created if its parent exists)")
    stems.add_argument("-m", "--model", default="htdemucs",
                       help="htdemucs (default), htdemucs_ft (four fine-tuned models: slower, a little cleaner), "
                            "htdemucs_6s (adds guitar and piano), or a folder holding NAME.yaml and SIG.safetensors")
    stems.add_argument("--two-stems", metavar="STEM", default=None,
                       help="two files: STEM and no_STEM, everything else (e.g. --two-stems vocals)")
    stems.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    stems.add_argument("--shifts", type=int, default=1,
                       help="passes over the music at random offsets, averaged: better and N times slower; 0 is "
                            "one pass, no shift (default: 1)")
    stems.add_argument("--format", choices=[f[1:] for f in OUTPUT_FORMATS], default="wav",
                       help="file format of the stems (default: wav)")
    stems.add_argument("--wav-format", choices=["pcm16", "pcm24", "float"], default="pcm16",
                       help="WAV sample format (default: pcm16)")
    stems.add_argument("--overwrite", action="store_true", help="replace existing stem files")
    stems.add_argument("--quiet", action="store_true", help="no progress bar")

    sub.add_parser("models", help="list model aliases and whether each is in the local cache")
    down = sub.add_parser("download", help="download a model into the local Hugging Face cache")
    down.add_argument("model", help="alias or hub id")
    return parser


def _add_model(group):
    """The model and where it runs (generate and score)."""
    group.add_argument("-m", "--model", default="small",
                       help="alias (see 'tunesmith models'), hub id or checkpoint folder (default: small)")
    group.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    group.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    group.add_argument("--quantize", choices=quantize_choices(), default=None,
                       help="MusicGen: weight-only int8, or int4 (CPU only), decoder weights; Stable Audio and "
                            "ACE-Step: int8 DiT and VAE decoder products (CPU only): faster, slightly less faithful")
    group.add_argument("--seed", type=int, default=None, help="seed for reproducible output (default: random)")


def _add_output_policy(group):
    group.add_argument("--overwrite", action="store_true", help="replace existing output files")
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def quantize_choices() -> list[str]:
    from .family import FAMILIES

    return list(dict.fromkeys(q for spec in FAMILIES.values() for q in spec.quantize))


def family_flags(command: str) -> dict[str, list[tuple[object, str]]]:
    """dest -> [(family spec, Option)] of every family option (and audio input) `command` takes, from the
    family table, in the table's order: an option several families share is one flag."""
    from .family import FAMILIES

    flags: dict[str, list] = {}
    for spec in FAMILIES.values():
        entries = [(name, option) for name, option in spec.params.items()
                   if option.flag and (command == "generate" or option.score)]
        if command == "generate":
            entries.append((audio_dest(spec), spec.audio_input))
        for dest, option in entries:
            flags.setdefault(dest, []).append((spec, option))
    return flags


def audio_dest(spec) -> str:
    """The attribute that holds a family's audio input flag: --continue -> continue, --init-audio -> init_audio."""
    return spec.audio_input.flag.lstrip("-").replace("-", "_")


def add_family_options(parser, common, command: str):
    """Each family's options as flags, from the family table: one group per family, and an option several
    families share once, among the common options, with what it means to each."""
    groups = {}
    for dest, owners in family_flags(command).items():
        spec, option = owners[0]
        if len(owners) == 1:
            if spec.name not in groups:
                groups[spec.name] = parser.add_argument_group(f"{spec.display} options")
            group, help = groups[spec.name], option.help
        else:
            helps = list(dict.fromkeys(o.help for _, o in owners))
            group = common
            help = helps[0] if len(helps) == 1 else "; ".join(f"{s.display}: {o.help}" for s, o in owners)
        metavar = option.metavar or KIND_METAVARS.get(option.kind)
        if option.kind == "textfile":  # FLAG FILE, or FLAG-text TEXT
            group.add_argument(option.flag, dest=f"{dest}_file", metavar=metavar, default=None, help=help)
            group.add_argument(f"{option.flag}-text", dest=f"{dest}_text", metavar="TEXT", default=None,
                               help=f"{option.flag} given on the command line")
            continue
        group.add_argument(option.flag, dest=dest, type=KIND_TYPES[option.kind], metavar=metavar, default=None,
                           help=help)


def _add_finishing(parser, fade_out: float, loudness: float | None):
    # None means "not given": defaults are filled in by _finishing, scaled down for short audio.
    group = parser.add_argument_group("finishing")
    group.add_argument("--fade-in", type=_seconds, default=None, help="seconds of equal-power fade in (default: 0)")
    group.add_argument("--fade-out", type=_seconds, default=None,
                       help=f"seconds of equal-power fade out (default: {fade_out:g}"
                            f"{', at most a quarter of the audio' if fade_out else ''})")
    group.add_argument("--loudness", type=float, default=None,
                       help="integrated loudness target in LUFS, e.g. -14 "
                            f"(default: {'none' if loudness is None else f'{loudness:g}'})")
    group.add_argument("--ceiling", type=float, default=-1.0, help="true-peak ceiling in dBTP (default: -1)")
    parser.set_defaults(default_fade_out=fade_out, default_loudness=loudness)


def _finishing_requested(finishing: dict) -> bool:
    return bool(finishing["fade_in"] or finishing["fade_out"] or finishing["loudness"] is not None)


def slug(prompt: str, limit: int = 40) -> str:
    """A file-name stem from a prompt: its words (letters and digits of any script), lower case, joined
    by '-', cut at a word within `limit` characters."""
    words = re.findall(r"[^\W_]+", prompt.lower())
    out = ""
    for w in words:
        if len(out) + len(w) + 1 > limit:
            break
        out = f"{out}-{w}" if out else w
    return out or (words[0][:limit] if words else "tunesmith")


def _unique(path: Path, taken: set[Path]) -> Path:
    candidate, n = path, 2
    while candidate.exists() or candidate in taken:
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate


def plan_outputs(output: str | None, rows: list[tuple[str, int | None]], overwrite: bool) -> list[Path]:
    """Output paths for (prompt, seed) rows, decided and checked before any generation.

    Auto-named files never replace anything; an explicit file is replaced only with --overwrite.
    """
    from .audio.io import check_output_path

    if output is None or output.endswith(("/", os.sep)) or Path(output).is_dir():
        folder = Path(output) if output else Path(".")
        if not folder.is_dir():
            raise TunesmithError(f"output folder {folder} does not exist")
        taken: set[Path] = set()
        paths = []
        for prompt, seed in rows:
            name = f"{slug(prompt)}-{seed}.wav" if seed is not None else f"{slug(prompt)}.wav"
            paths.append(_unique(folder / name, taken))
            taken.add(paths[-1])
    else:
        base = Path(output)
        if len(rows) == 1:
            paths = [base]
        else:
            paths = [base.with_name(f"{base.stem}-{i}{base.suffix}") for i in range(1, len(rows) + 1)]
        clash = [p for p in paths if p.exists()]
        if clash and not overwrite:
            raise TunesmithError(f"{clash[0]} exists: choose another output or pass --overwrite")
    for p in paths:
        check_output_path(p)
    return paths


def plan_stems(base: Path, stems: list[str], overwrite: bool, taken: set[Path] = frozenset()) -> dict[str, Path]:
    """The stem files of `base` (folder/NAME.EXT -> folder/NAME-STEM.EXT), checked as generate's outputs
    are; an existing one is replaced only with --overwrite. The folder may not exist yet when its parent
    does (cmd_stems creates it just before writing)."""
    from .audio.io import check_output_path

    paths = {stem: base.with_name(f"{base.stem}-{stem}{base.suffix}") for stem in stems}
    for path in paths.values():
        if path in taken:
            raise TunesmithError(f"{path} would be written twice: choose another output name")
        if path.exists() and not overwrite:
            raise TunesmithError(f"{path} exists: choose another output or pass --overwrite")
        folder = path.parent
        if folder.exists() and not folder.is_dir():
            raise TunesmithError(f"cannot write {path}: {folder} is not a folder")
        if not folder.exists() and not folder.parent.is_dir():
            raise TunesmithError(f"output folder {folder} does not exist, nor does its parent")
        check_output_path(path if folder.is_dir() else folder.parent / path.name)
    return paths


def _write_stems(stems: dict, paths: dict[str, Path], wav_format: str):
    for name, stem in stems.items():
        stem.save(paths[name], wav_format=wav_format)
        print(paths[name])


def cmd_stems(args) -> int:
    from .request import audio_input
    from .stems import load_stem_model, separate

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
    _say_ignored_wav_format(args.wav_format, list(paths.values()))
    stems = separate(source, model=model, shifts=args.shifts, two_stems=args.two_stems, progress=not args.quiet)
    if not folder.exists():
        try:
            folder.mkdir()
        except OSError as err:
            raise TunesmithError(f"cannot create {folder}: {err.strerror or err}") from None
    _write_stems(stems, paths, args.wav_format)
    return 0


def _prompts(args) -> list:
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


def _options(args) -> dict:
    """The family options given on the command line (the family's defaults fill in the rest; an option
    of another family is refused by check_request with its flag named). A text option read from a file
    (--lyrics FILE) is read here, or taken as given (--lyrics-text TEXT)."""
    options = {}
    for dest, owners in family_flags(args.command).items():
        name, option = dest, owners[0][1]
        if option is owners[0][0].audio_input:
            continue  # the audio input is audio_prompt (_audio_prompt)
        if option.kind == "textfile":
            file, text = getattr(args, f"{dest}_file", None), getattr(args, f"{dest}_text", None)
            if file is not None and text is not None:
                raise InvalidParameter(f"give the {name} either as {option.flag} FILE or as {option.flag}-text TEXT, "
                                       "not both")
            value = option.read(file) if file is not None else text
        else:
            value = getattr(args, dest, None)
        if value is not None:
            options[name] = value
    return options


def _given(args, dest: str, option) -> bool:
    if option.kind == "textfile":
        return getattr(args, f"{dest}_file", None) is not None or getattr(args, f"{dest}_text", None) is not None
    return getattr(args, dest, None) is not None


def _audio_prompt(args, family: str):
    """The family's audio input flag (MusicGen's --continue, Stable Audio's and ACE-Step's --init-audio); another
    family's is refused with what this family takes instead."""
    from .family import FAMILIES

    spec = FAMILIES[family]
    own = audio_dest(spec)
    if any(getattr(args, audio_dest(other), None) is not None for other in FAMILIES.values()
           if audio_dest(other) != own):
        raise InvalidParameter(spec.other_audio)
    return getattr(args, own)


def _describe(args, check):
    """The model's family and longest clip (models.describe). When its folder cannot say, the values are
    checked first as the flags' family would check them: a value's own mistake is named before the folder's.
    The flags' family: the last in the table with an option of its own (none of an earlier family's) given;
    else the first."""
    from .errors import CheckpointError, ModelNotFound
    from .family import FAMILIES
    from .models import describe

    try:
        return describe(args.model)
    except (CheckpointError, ModelNotFound):
        flags, earlier, family = family_flags(args.command), set(), next(iter(FAMILIES))
        for spec in FAMILIES.values():
            own = {dest: option for dest, owners in flags.items() for s, option in owners if s is spec}
            if any(dest not in earlier and _given(args, dest, option) for dest, option in own.items()):
                family = spec.name
            earlier.update(own)
        check(family, None)
        raise


def _check_quantize(args, family: str):
    from .family import FAMILIES

    spec = FAMILIES[family]
    if args.quantize is None:
        return
    if args.quantize not in spec.quantize:
        offering = [s for s in FAMILIES.values() if args.quantize in s.quantize]
        others = [s for s in FAMILIES.values() if args.quantize not in s.quantize]
        values = "/".join(dict.fromkeys(q for s in others for q in s.quantize))
        where = ", on the CPU" if all(s.quantize_cpu for s in others) else ""
        raise InvalidParameter(f"--quantize {args.quantize} applies to {_and(s.display for s in offering)} models "
                               f"({_and(s.display for s in others)}: {values}{where})")
    if spec.quantize_cpu and args.device not in ("auto", "cpu"):
        raise InvalidParameter(f"--quantize {args.quantize} is for the CPU with {spec.display} models")


def _and(names) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _load(args, spec):
    from .models import load

    options = {"threads": getattr(args, "threads", None)}
    if args.quantize is not None:
        options["quantize"] = args.quantize
    return load(spec.folder or args.model, device=args.device, dtype=args.dtype, **options)


def cmd_generate(args) -> int:
    from .request import check_request

    # Every value and input file is checked, and every output path decided, before the model loads.
    def check(family: str, longest: float | None, turbo: bool = False):
        return check_request(_prompts(args), family=family, longest=longest, duration=args.duration, seed=args.seed,
                             num_variations=args.variations, audio_prompt=_audio_prompt(args, family),
                             loop=args.loop, turbo=turbo, **_options(args))

    spec = _describe(args, check)
    request = check(spec.family, spec.longest, spec.turbo)
    _check_quantize(args, spec.family)
    if args.loop and (args.fade_in or args.fade_out):
        raise InvalidParameter("fades would break a seamless loop: use --loop without --fade-in/--fade-out")
    paths = plan_outputs(args.output, [(s[0][1], seed) for s, seed in request.rows], args.overwrite)
    _say_ignored_wav_format(args.wav_format, paths)
    finishing = _finishing(args, request.duration)
    stem_model, stem_paths = None, [{} for _ in paths]
    if args.stems_model is not None and not args.stems:
        raise InvalidParameter("--stems-model chooses the model of --stems: add --stems")
    if args.stems:  # the stems model is loaded, and every stem's file checked, before any generation
        from .stems import load_stem_model

        stem_model = load_stem_model(args.stems_model or "htdemucs", device=args.device)
        stem_paths = [plan_stems(path, stem_model.sources, args.overwrite, taken=set(paths)) for path in paths]
    model = _load(args, spec)
    clips = model.generate_request(request, progress=not args.quiet)
    failed = 0
    for clip, path, stem_files in zip(clips, paths, stem_paths):
        if _finishing_requested(finishing):
            clip = clip.finish(**finishing)
        clip.save(path, wav_format=args.wav_format)
        print(path)
        if stem_model is not None:
            try:
                stems = clip.stems(model=stem_model, progress=not args.quiet)
            except TunesmithError as err:  # a silent clip has nothing to separate: the others still do
                log.warning("no stems for %s: %s", path, err)
            else:
                _write_stems(stems, stem_files, args.wav_format)
        if not clip.check.ok:
            failed += 1
            log.warning("%s failed the output check: %s", path, clip.check.summary())
        if len(clips) > 1:
            log.info("%s: seed %d, %r", path, clip.seed, clip.prompt)
        else:
            log.info("seed %d", clip.seed)
    return EXIT_CHECK_FAILED if failed and args.strict else 0


def _say_ignored_wav_format(wav_format: str, paths: list[Path]):
    """--wav-format sets WAV's samples; say so once where an output cannot take it."""
    if wav_format == "pcm16":
        return
    for suffix in sorted({p.suffix.lower() for p in paths} - {".wav"}):
        if suffix == ".flac" and wav_format == "float":
            log.warning("--wav-format float: FLAC has no float samples, so .flac files are written in 24 bits")
        elif suffix != ".flac":
            log.warning("--wav-format %s applies to .wav (and .flac) files: %s is encoded with its own codec",
                        wav_format, suffix)


def _finishing(args, duration: float) -> dict:
    """Clip.finish's arguments for audio of `duration` s, checked before any model loads. Values given
    are kept, and refused when they do not fit; defaults shrink to fit short audio (a video of half a
    second is still scored): the fade-out to a quarter of it at most, no loudness target under 0.4 s."""
    from .audio.finishing import LOUDNESS_MIN_S

    for value, what in ((args.fade_in, "--fade-in"), (args.fade_out, "--fade-out")):
        if value is not None and not 0 <= value < float("inf"):
            raise InvalidParameter(f"{what} must be a number of seconds >= 0, got {value}")
    fade_in = 0.0 if args.fade_in is None else args.fade_in
    fade_out = args.fade_out
    if fade_out is None:
        fade_out = min(args.default_fade_out, duration / 4, max(duration - fade_in, 0.0))
    if fade_in + fade_out > duration:
        raise InvalidParameter(f"--fade-in plus --fade-out ({fade_in + fade_out:g} s) is longer "
                               f"than the audio ({duration:g} s)")
    loudness = args.loudness
    if loudness is None and duration >= LOUDNESS_MIN_S:
        loudness = args.default_loudness
    for value, what in ((loudness, "--loudness"), (args.ceiling, "--ceiling")):
        if value is not None and not -70 <= value <= 0:
            raise InvalidParameter(f"{what} must be between -70 and 0, got {value}")
    return dict(fade_in=fade_in, fade_out=fade_out, loudness=loudness, ceiling=args.ceiling)


def cmd_score(args) -> int:
    import time

    from .audio.checks import check_audio
    from .audio.io import read_audio, resample
    from .clip import Clip
    from .request import check_request
    from .video.score import AUDIO_CODECS, VIDEO_RATE, check_original_gain, mux, plan_jobs

    if args.audio is None:
        if len(args.inputs) < 2:
            raise InvalidParameter("give the video(s) and then a prompt, or --audio TRACK")
        videos, prompt = args.inputs[:-1], args.inputs[-1]
        if Path(prompt).suffix.lower() in AUDIO_CODECS and Path(prompt).exists():  # a video container
            raise InvalidParameter(f"the last argument must be the prompt, not a video ({prompt})")
    else:
        videos, prompt = args.inputs, None
    check_original_gain(args.original_gain, "--original-gain")
    jobs = plan_jobs(videos, args.output, args.overwrite)
    finishing = [_finishing(args, job.video.duration) for job in jobs]
    requests = [None] * len(jobs)
    if args.audio is None:  # every value checked before the model loads, as for generate
        def check(family: str, longest: float | None, turbo: bool = False):
            return [check_request(prompt, family=family, longest=longest, duration=job.video.duration, seed=args.seed,
                                  turbo=turbo, **_options(args)) for job in jobs]

        spec = _describe(args, check)
        _check_quantize(args, spec.family)
        for job in jobs:
            if spec.longest is not None and job.video.duration > spec.longest:
                raise InvalidParameter(f"{job.video.path} lasts {job.video.duration:.1f} s, longer than the "
                                       f"{spec.longest:.1f} s {args.model} makes at once: score it with a MusicGen "
                                       "model (long pieces), or give a track with --audio")
        requests = check(spec.family, spec.longest, spec.turbo)
    track = read_audio(args.audio) if args.audio else None
    if track is not None:
        track_check = check_audio(track[0])  # a given track is judged as a generated one is
        if not track_check.ok:
            log.warning("%s failed the output check: %s", args.audio, track_check.summary())

    model = None
    timings = []
    for job, finish, request in zip(jobs, finishing, requests):
        seconds = job.video.duration
        started = time.perf_counter()
        if track is None:
            if model is None:
                model = _load(args, spec)
            clip, = model.generate_request(request, progress=not args.quiet)
            if not clip.check.ok:  # the raw clip, as generate judges it; finishing could hide a fault
                log.warning("%s failed the output check: %s", job.output, clip.check.summary())
        else:
            audio, rate = track
            if audio.shape[1] < round(seconds * rate):
                log.warning("%s is shorter than %s: the rest is silence", args.audio, job.video.path)
            clip = Clip(audio, rate, "", 0, check=track_check)
        generated = time.perf_counter()
        finished = clip.finish(**finish, length=seconds)
        audio = resample(finished.audio, finished.sample_rate, VIDEO_RATE)
        done_finishing = time.perf_counter()
        mux(job, audio, VIDEO_RATE, args.original, args.original_gain, finish["ceiling"], finish["loudness"])
        done = time.perf_counter()
        print(job.output)
        if track is None:
            log.info("%s: seed %d", job.output, clip.seed)
        timings.append((job.video.path.name, seconds, generated - started, done_finishing - generated,
                        done - done_finishing))
    _print_timings(timings, "loading + generation" if track is None else "reading the track")
    return 0


def _print_timings(rows, first_stage: str):
    width = max(len(r[0]) for r in rows)
    lines = [f"{'video':<{width}}  {'length':>7}  {first_stage:>20}  {'finishing':>9}  {'mux':>6}"]
    for name, length, gen, fin, mux_s in rows:
        lines.append(f"{name:<{width}}  {length:>6.1f}s  {gen:>19.1f}s  {fin:>8.2f}s  {mux_s:>5.2f}s")
    print("\n".join(lines), file=sys.stderr)


def cmd_models(args) -> int:
    from .family import FAMILIES
    from .hub import ALIASES, cached_folder

    print(f"{'alias':<21}{'family':<14}{'hub id':<40}{'params':>7}  {'audio':<17}{'longest':<11}{'input':<22}"
          f"{'licence':<21}cached")
    for alias, info in ALIASES.items():
        cached = "yes" if cached_folder(info.repo) else ("no (gated)" if info.gated else "no")
        family = FAMILIES[info.family]
        follows = "text + melody" if info.melody else "text + style" if info.style else family.inputs
        audio = f"{info.sample_rate / 1000:g} kHz {'stereo' if info.channels == 2 else 'mono'}"
        longest = "long form" if info.longest is None else f"{info.longest:.1f} s"
        print(f"{alias:<21}{family.display:<14}{info.repo:<40}{info.params:>7}  {audio:<17}{longest:<11}"
              f"{follows:<22}{info.licence:<21}{cached}")
    return 0


def cmd_download(args) -> int:
    from .errors import ModelNotFound
    from .hub import HubUnavailable, download, is_checkpoint, local_folder, repo_for
    from .stable_audio.load import also_needed

    folder = local_folder(args.model)
    if folder is not None:  # nothing to fetch; still print the folder, as for a download
        if not is_checkpoint(folder):
            raise ModelNotFound(f"{args.model} is a local folder without a checkpoint (config.json and weights); "
                                "download takes an alias or hub id")
        log.info("%s is a local checkpoint folder already: nothing to download", args.model)
        print(folder)
        return 0
    try:
        folder = download(repo_for(args.model))
        for repo in also_needed(folder):  # stable-audio-open-small's T5 lives in its own repository
            log.info("%s also needs %s", args.model, repo)
            download(repo)
        print(folder)
    except HubUnavailable as err:
        todo = "unset HF_HUB_OFFLINE" if err.offline else "connect to the network and try again"
        raise ModelNotFound(f"{err}: downloading needs the network; {todo}") from None
    return 0


def cmd_serve(args) -> int:
    from importlib.util import find_spec

    # The server's packages are an extra: say how to get them rather than fail on an import.
    multipart = find_spec("python_multipart") or find_spec("multipart")
    if not (find_spec("fastapi") and find_spec("uvicorn") and multipart):
        raise TunesmithError("tunesmith serve needs fastapi, uvicorn and python-multipart: "
                             "pip install 'tunesmith[server]'")
    from .server.run import serve
    from .server.settings import ServerSettings
    from .server.worker import WorkerSettings

    for value, what in ((args.max_batch, "--max-batch"), (args.keep_jobs, "--keep-jobs")):
        if value < 1:
            raise InvalidParameter(f"{what} must be at least 1, got {value}")
    if not args.keep_days > 0:
        raise InvalidParameter(f"--keep-days must be a positive number of days, got {args.keep_days}")
    worker = WorkerSettings(device=args.device, dtype=args.dtype, loaded=args.loaded, max_batch=args.max_batch,
                            keep_days=args.keep_days, keep_jobs=args.keep_jobs)
    settings = ServerSettings(models=args.models or ["small"], host=args.host, port=args.port,
                              data=Path(args.data) if args.data else None, max_queue=args.max_queue,
                              media_dirs=[Path(d) for d in args.media_dir], token=args.token or None,
                              cors=args.cors, worker=worker, repair_store=args.repair_store)
    try:
        serve(settings)
    except KeyboardInterrupt:  # uvicorn has shut down cleanly and passes the signal on
        pass
    log.info("stopped")
    return 0


def flag_names() -> dict[str, str]:
    """Each parameter as the command line names it: 'top_k (--top-k)' (the API's keyword and the flag)."""
    from .family import FAMILIES
    from .params import COMMON, STEMS, shown_names

    return shown_names(COMMON, STEMS, *(spec.params for spec in FAMILIES.values()))


def said(err: TunesmithError) -> str:
    """An error's line; a refused parameter named with its flag."""
    return err.render(flag_names()) if isinstance(err, InvalidParameter) else str(err)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tunesmith: %(message)s"))
    log.addHandler(handler)
    level, propagate = log.level, log.propagate  # given back at the end: main() may run inside a program
    log.setLevel(logging.INFO)
    log.propagate = False
    commands = {"generate": cmd_generate, "score": cmd_score, "stems": cmd_stems, "models": cmd_models,
                "download": cmd_download, "serve": cmd_serve}
    try:
        return commands[args.command](args)
    except TunesmithError as err:
        print(f"tunesmith: error: {said(err)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("tunesmith: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tunesmith models | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141
    except Exception as err:  # a bug of ours: still one line, the traceback on request
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk, whatever wrote
            print(f"tunesmith: error: {err.filename or 'a file'}: no space left on the device", file=sys.stderr)
            return EXIT_ERROR
        if os.environ.get("TUNESMITH_DEBUG"):
            raise
        print(f"tunesmith: internal error: {type(err).__name__}: {err} (set TUNESMITH_DEBUG=1 for details)",
              file=sys.stderr)
        return EXIT_ERROR
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate


if __name__ == "__main__":
    sys.exit(main())
