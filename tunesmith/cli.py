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


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .musicgen.options import CONTEXT

    parser = _Parser(prog="tunesmith", description="Describe music in words, get audio. Local MusicGen, "
                                                   "Stable Audio Open and ACE-Step.")
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = sub.add_parser("generate", help="generate music from a text prompt")
    gen.add_argument("words", nargs="*", metavar="PROMPT",
                     help="what the music should be; words without quotes form one prompt")
    gen.add_argument("--text", action="append", default=[], metavar="TEXT",
                     help="one more prompt, generated in the same batch; repeat for several")
    gen.add_argument("--prompt", action="append", dest="schedule", metavar="SECONDS:TEXT", type=_schedule_entry,
                     help="a prompt that starts at SECONDS; repeat for a piece whose prompt changes over time")
    gen.add_argument("--continue", dest="continue_from", metavar="FILE", default=None,
                     help="MusicGen: continue this audio; the output starts with it and lasts -d seconds in total")
    gen.add_argument("--melody", metavar="FILE", default=None,
                     help="a tune to follow (melody models: -m melody, melody-large, stereo-melody, ...)")
    gen.add_argument("--style", metavar="FILE", default=None,
                     help="take the timbre, groove and texture of this reference (style models: -m style); "
                          "PROMPT may then be left out")
    gen.add_argument("--cfg-beta", dest="cfg_beta", type=float, default=None,
                     help="with --style and a PROMPT: how much more the text steers than the style (default: 5)")
    gen.add_argument("--style-excerpt", dest="style_excerpt", type=float, default=None,
                     help="with --style: seconds of the reference the model hears, 1.5 to 4.5 (default: 3)")
    gen.add_argument("--style-quantizers", dest="style_quantizers", type=int, default=None,
                     help="with --style: style codebooks used, 1 to 6 (default: 3); fewer copy it less closely")
    gen.add_argument("--style-start", dest="style_start", type=float, default=None,
                     help="with --style: where the excerpt starts, in seconds (default: drawn from the seed)")
    gen.add_argument("--context", type=_seconds, default=None,
                     help="MusicGen, long pieces: seconds of the piece so far that condition each new window "
                          f"(default: {CONTEXT:g})")
    gen.add_argument("--init-audio", metavar="FILE", default=None,
                     help="Stable Audio: start from this sound (audio-to-audio); --strength says how far to move. "
                          "ACE-Step: the song to repaint (with --repaint)")
    gen.add_argument("--repaint", metavar="START:END", type=_span, default=None,
                     help="ACE-Step, with --init-audio: make these seconds of the song anew and keep the rest "
                          "(30:45; 30: to the end); the output lasts as long as the song")
    gen.add_argument("--strength", type=float, default=None,
                     help="with --init-audio: 0 keeps the sound, 1 ignores it (default: 0.7)")
    gen.add_argument("--lyrics", dest="lyrics_file", metavar="FILE", default=None,
                     help="ACE-Step: a text file of the words to sing ([verse], [chorus], ... mark sections); "
                          "without lyrics, an instrumental")
    gen.add_argument("--lyrics-text", dest="lyrics_text", metavar="TEXT", default=None,
                     help="ACE-Step: the words to sing, given on the command line")
    gen.add_argument("--language", default=None,
                     help="ACE-Step: the lyrics' language code, e.g. en (default), zh, ja, es")
    gen.add_argument("-d", "--duration", type=_seconds, default=None,
                     help="seconds of audio (default: 10; ACE-Step: 10 to 600; with --repaint: the song's length)")
    gen.add_argument("-n", "--variations", type=int, default=1, help="variations of each prompt (default: 1)")
    gen.add_argument("-o", "--output", default=None,
                     help="output file (.wav, .flac, .mp3, .ogg, .m4a) or folder; several clips get -1, -2, ... "
                          "suffixes")
    gen.add_argument("--strict", action="store_true", help="exit with status 3 if a clip fails the output check")
    gen.add_argument("--threads", type=int, default=None, help="CPU threads (default: one per core)")
    gen.add_argument("--loop", action="store_true", help="a seamless loop of exactly the duration")
    gen.add_argument("--wav-format", choices=["pcm16", "pcm24", "float"], default="pcm16",
                     help="WAV sample format (default: pcm16)")
    gen.add_argument("--stems", action="store_true",
                     help="also split each clip into stems: NAME-drums.wav, NAME-bass.wav, ... beside it")
    gen.add_argument("--stems-model", default=None, metavar="MODEL",
                     help="with --stems: htdemucs (default), htdemucs_ft, htdemucs_6s or a folder")
    _add_model_and_sampling(gen)
    _add_finishing(gen, fade_out=0.0, loudness=None)

    score = sub.add_parser("score", help="put generated (or given) music under videos, picture untouched")
    score.add_argument("inputs", nargs="+", metavar="VIDEO... PROMPT",
                       help="one or more videos, then the prompt (no prompt with --audio)")
    score.add_argument("-o", "--output", default=None,
                       help="output video (one input) or folder (default: NAME-scored.EXT beside each input)")
    score.add_argument("--audio", default=None, metavar="TRACK", help="score with this audio file instead")
    score.add_argument("--original", choices=["replace", "under", "over"], default="replace",
                       help="the video's own audio: replace it (default), keep it under or over the music")
    score.add_argument("--original-gain", type=float, default=-12.0,
                       help="dB for the quieter of the two when mixing, -60 to 0 (default: -12)")
    _add_model_and_sampling(score)
    _add_finishing(score, fade_out=1.0, loudness=-14.0)

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
    serve.add_argument("--store", default=os.environ.get("TUNESMITH_STORE"), metavar="URL",
                       help="postgresql://USER@HOST:PORT/DB: jobs in PostgreSQL, shared by servers on several "
                            "machines (pip install 'tunesmith[cluster]'; default: SQLite in --data; env "
                            "TUNESMITH_STORE keeps a password off the command line)")
    serve.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="serve on Ray Serve: `local` starts a Ray head on 127.0.0.1, an address joins a cluster "
                            "(needs --store postgresql://...; every node must see --data)")
    serve.add_argument("--replicas", default="1", metavar="N|MIN:MAX",
                       help="with --ray: generation replicas, fixed or autoscaled on queued jobs (default: 1)")
    serve.add_argument("--lease", type=float, default=None, metavar="SECONDS",
                       help="with a postgresql:// store: a job whose server died runs again after this (default: 30)")

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


def _add_model_and_sampling(parser):
    """The options generate and score share: the model, where it runs, sampling, and output policy."""
    from .musicgen.options import SamplingParams

    parser.add_argument("-m", "--model", default="small",
                        help="alias (see 'tunesmith models'), hub id or checkpoint folder (default: small)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--quantize", choices=["int8", "int4"], default=None,
                        help="MusicGen: weight-only int8, or int4 (CPU only), decoder weights; Stable Audio and "
                             "ACE-Step: int8 DiT and VAE decoder products (CPU only): faster, slightly less faithful")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible output (default: random)")
    parser.add_argument("--cfg", type=float, default=None,
                        help=f"classifier-free guidance, 1 disables (default: MusicGen {SamplingParams.cfg:g}, sao 7, "
                             "sao-small 1, acestep-base/sft 7; acestep turbo has none)")
    parser.add_argument("--temperature", type=float, default=None,
                        help=f"MusicGen: 0 is greedy (default: {SamplingParams.temperature:g})")
    parser.add_argument("--top-k", dest="top_k", type=int, default=None,
                        help=f"MusicGen: 0 disables (default: {SamplingParams.top_k})")
    parser.add_argument("--top-p", dest="top_p", type=float, default=None,
                        help=f"MusicGen: 0 disables (default: {SamplingParams.top_p:g})")
    parser.add_argument("--steps", type=int, default=None,
                        help="Stable Audio, ACE-Step: sampler steps (default: sao 100, sao-small 8, acestep 8, "
                             "acestep-base/sft 50)")
    parser.add_argument("--negative", dest="negative_prompt", metavar="TEXT", default=None,
                        help="Stable Audio: what the sound should not be (with guidance above 1)")
    parser.add_argument("--sampler", default=None,
                        help="Stable Audio: sao dpmpp-2m-sde; sao-small pingpong (default) or euler")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_finishing(parser, fade_out: float, loudness: float | None):
    # None means "not given": defaults are filled in by _finishing, scaled down for short audio.
    parser.add_argument("--fade-in", type=_seconds, default=None, help="seconds of equal-power fade in (default: 0)")
    parser.add_argument("--fade-out", type=_seconds, default=None,
                        help=f"seconds of equal-power fade out (default: {fade_out:g}"
                             f"{', at most a quarter of the audio' if fade_out else ''})")
    parser.add_argument("--loudness", type=float, default=None,
                        help="integrated loudness target in LUFS, e.g. -14 "
                             f"(default: {'none' if loudness is None else f'{loudness:g}'})")
    parser.add_argument("--ceiling", type=float, default=-1.0, help="true-peak ceiling in dBTP (default: -1)")
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
    of the other family is refused by check_request with its flag named)."""
    from .request import OPTIONS

    names = dict.fromkeys(name for options in OPTIONS.values() for name in options)
    options = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    lyrics = _lyrics(args)
    if lyrics is not None:
        options["lyrics"] = lyrics
    return options


def _lyrics(args) -> str | None:
    """--lyrics FILE (read, refused with one line when missing or not text) or --lyrics-text TEXT."""
    from .request import read_lyrics

    file, text = getattr(args, "lyrics_file", None), getattr(args, "lyrics_text", None)
    if file is not None and text is not None:
        raise InvalidParameter("give the lyrics either as --lyrics FILE or as --lyrics-text TEXT, not both")
    return read_lyrics(file) if file is not None else text


def _audio_prompt(args, family: str):
    """--continue (MusicGen) or --init-audio (Stable Audio's start, ACE-Step's song to repaint): each refused
    for the other families."""
    if family == "stable_audio" and args.continue_from is not None:
        raise InvalidParameter("Stable Audio models do not continue audio: start from it with --init-audio FILE "
                               "(and --strength)")
    if family == "musicgen" and args.init_audio is not None:
        raise InvalidParameter("--init-audio is for Stable Audio models (-m sao-small, sao); MusicGen continues "
                               "audio with --continue FILE")
    if family == "acestep" and args.continue_from is not None:
        raise InvalidParameter("ACE-Step models do not continue audio: make a span of a song anew with "
                               "--init-audio FILE --repaint START:END")
    if family == "acestep":
        return args.init_audio
    return args.init_audio if family == "stable_audio" else args.continue_from


def _describe(args, check):
    """The model's family and longest clip (models.describe). When its folder cannot say, the values are
    checked first as the flags' family would check them: a value's own mistake is named before the folder's."""
    from .errors import CheckpointError, ModelNotFound
    from .models import describe
    from .request import OPTIONS

    try:
        return describe(args.model)
    except (CheckpointError, ModelNotFound):
        song_only = [*(set(OPTIONS["acestep"]) - set(OPTIONS["musicgen"]) - set(OPTIONS["stable_audio"])),
                     "lyrics_file", "lyrics_text"]
        diffusion_only = [*(set(OPTIONS["stable_audio"]) - set(OPTIONS["musicgen"])), "init_audio"]
        given = [n for n in (*song_only, *diffusion_only) if getattr(args, n, None) is not None]
        family = "acestep" if set(given) & set(song_only) else "stable_audio" if given else "musicgen"
        check(family, None)
        raise


def _check_quantize(args, family: str):
    from .request import FAMILY_NAMES

    if args.quantize == "int4" and family != "musicgen":
        raise InvalidParameter("--quantize int4 applies to MusicGen models (Stable Audio and ACE-Step: int8, on the CPU)")
    if args.quantize is not None and family != "musicgen" and args.device not in ("auto", "cpu"):
        raise InvalidParameter(f"--quantize int8 is for the CPU with {FAMILY_NAMES[family]} models")


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
                              cors=args.cors, worker=worker, repair_store=args.repair_store,
                              store=args.store or None, lease_s=args.lease)
    try:
        if args.ray:
            if not find_spec("ray"):
                raise TunesmithError("tunesmith serve --ray needs Ray Serve: pip install 'tunesmith[cluster]'")
            from .server.cluster import Replicas, serve_on_ray

            serve_on_ray(settings, args.ray, Replicas.parse(args.replicas))
        else:
            serve(settings)
    except KeyboardInterrupt:  # uvicorn has shut down cleanly and passes the signal on
        pass
    log.info("stopped")
    return 0


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
        print(f"tunesmith: error: {err}", file=sys.stderr)
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
