"""The command line's parser: one subcommand each, generate's and score's family options built from the
family table (tunesmith/family.py), in groups: common, one per family, finishing, output."""

from __future__ import annotations

import argparse
import os
import sys

from ..audio.formats import FORMATS, WAV_FORMATS
from ..errors import did_you_mean


EXIT_ERROR, EXIT_USAGE, EXIT_CHECK_FAILED = 1, 2, 3


class _Parser(argparse.ArgumentParser):
    commands: dict | None = None  # the subcommands' parsers, by name (set on the top-level parser)

    def error(self, message):  # one line, not argparse's usage block
        self.exit(EXIT_USAGE, f"tunesmith: error: {message} (see '{self.prog} --help')\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but a flag no command has is refused by the command's own parser (its help named),
        with the closest flag it has: `--temprature (did you mean --temperature?)`."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = (self.commands or {}).get(getattr(parsed, "command", None), self)
            flag = next((e for e in extras if e.startswith("-")), None)
            if flag is None:
                command.error(f"unrecognized arguments: {' '.join(extras)}")
            name = flag.partition("=")[0]
            command.error(f"unrecognized argument {name}{did_you_mean(name, command._option_string_actions)}")
        return parsed

    def _check_value(self, action, value):  # a mistyped choice (a command, --device) gets the closest one
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as err:
            if action.choices is None or not isinstance(value, str):
                raise
            raise argparse.ArgumentError(action, f"{err.message}{did_you_mean(value, action.choices)}") from None


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


KIND_TYPES = {"number": float, "seconds": _seconds, "whole": int, "text": None, "audio": None, "span": _span,
              "spans": _span, "textfile": None, "meter": None}
KIND_METAVARS = {"audio": "FILE", "textfile": "FILE", "span": "START:END", "spans": "START:END", "text": "TEXT"}


LIGHT = ("serve", "stems", "models", "download")  # commands whose parsers need no family table


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv` (default: sys.argv's): generate's and score's arguments, built from the family
    table, are built only when argv asks for one of them (or for a command it cannot tell), so that
    `tunesmith --help` and the other commands import no family table."""
    from .. import __version__

    parser = _Parser(prog="tunesmith", description="Describe music in words, get audio. Local MusicGen, "
                                                   "Stable Audio Open, ACE-Step and Stable Audio 3.")
    parser.add_argument("--version", action="version", version=f"tunesmith {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    asked = next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)
    full = asked is not None and asked not in LIGHT
    gen = sub.add_parser("generate", help="generate music from a text prompt")
    score = sub.add_parser("score", help="put generated (or given) music under videos, picture untouched",
                           usage="tunesmith score [options] VIDEO [VIDEO ...] PROMPT ...\n"
                                 "       tunesmith score [options] VIDEO [VIDEO ...] --audio TRACK")
    if full:
        _generate_arguments(gen)
        _score_arguments(score)
    _other_commands(sub)
    parser.commands = sub.choices
    return parser


def _generate_arguments(gen):
    gen.add_argument("words", nargs="*", metavar="PROMPT",
                     help="what the music should be; words without quotes form one prompt")
    common = gen.add_argument_group("common options")
    common.add_argument("--text", action="append", default=[], metavar="TEXT",
                        help="one more prompt, generated in the same batch; repeat for several")
    common.add_argument("--prompt", action="append", dest="schedule", metavar="SECONDS:TEXT", type=_schedule_entry,
                        help="a prompt that starts at SECONDS; repeat for a piece whose prompt changes over time")
    _add_model(common)
    _add_threads(common)
    common.add_argument("-d", "--duration", type=_seconds, default=None,
                        help="seconds of audio (default: 10; ACE-Step: 10 to 600; with --repaint: the song's length)")
    common.add_argument("-n", "--variations", type=int, default=1, help="variations of each prompt (default: 1)")
    common.add_argument("--loop", action="store_true", help="a seamless loop of exactly the duration")
    _add_meter(gen)
    add_family_options(gen, common, "generate")
    _add_finishing(gen, fade_out=0.0, loudness=None)
    output = gen.add_argument_group("output")
    output.add_argument("-o", "--output", default=None,
                        help=f"output file ({', '.join('.' + f for f in FORMATS)}; a name without one is .wav) or "
                             "folder/; several clips get -1, -2, ... suffixes")
    output.add_argument("--wav-format", choices=WAV_FORMATS, default="pcm16",
                        help="WAV sample format (default: pcm16)")
    output.add_argument("--strict", action="store_true", help="exit with status 3 if a clip fails the output check")
    output.add_argument("--stems", action="store_true",
                        help="also split each clip into stems: NAME-drums.wav, NAME-bass.wav, ... beside it")
    output.add_argument("--stems-model", default=None, metavar="MODEL",
                        help="with --stems: htdemucs (default), htdemucs_ft, htdemucs_6s or a folder")
    _add_output_policy(output)


def _score_arguments(score):
    score.add_argument("inputs", nargs="+", metavar="VIDEO... PROMPT...",
                       help="one or more videos (the arguments that are files), then the prompt: words without "
                            "quotes form one prompt (no prompt with --audio)")
    common = score.add_argument_group("common options")
    score.add_argument("--audio", default=None, metavar="TRACK", help="score with this audio file instead")
    _add_model(common)
    _add_threads(common)
    _add_meter(score, bars=False)  # the video sets the length
    add_family_options(score, common, "score")
    _add_finishing(score, fade_out=1.0, loudness=-14.0)
    output = score.add_argument_group("output")
    output.add_argument("-o", "--output", default=None,
                        help="output video (one input; a name without an extension takes the video's) or folder/ "
                             "(default: NAME-scored.EXT beside each input)")
    output.add_argument("--original", choices=["replace", "under", "over"], default="replace",
                        help="the video's own audio: replace it (default), keep it under or over the music")
    output.add_argument("--original-gain", type=float, default=-12.0,
                        help="dB for the quieter of the two when mixing, -60 to 0 (default: -12)")
    _add_output_policy(output)


def _other_commands(sub):
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
    serve.add_argument("--lora-dir", default=None, metavar="DIR",
                       help="LoRA adapters clients may name (GET /api/loras): PEFT folders and .safetensors files")
    serve.add_argument("--lora", action="append", default=[], metavar="NAME[@SCALE]",
                       help="an adapter of --lora-dir merged into the default model (the first -m); repeat to stack")
    serve.add_argument("--stems-model", action="append", default=None, metavar="MODEL",
                       help="a stems model to offer: htdemucs, htdemucs_ft, htdemucs_6s or a local Demucs folder (its "
                            "bag's NAME.yaml names it); repeat for several, the first is the default (default: the "
                            "three)")
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
    stems.add_argument("--format", choices=FORMATS, default="wav",
                       help="file format of the stems (default: wav)")
    stems.add_argument("--wav-format", choices=WAV_FORMATS, default="pcm16",
                       help="WAV sample format (default: pcm16)")
    stems.add_argument("--overwrite", action="store_true", help="replace existing stem files")
    stems.add_argument("--quiet", action="store_true", help="no progress bar")

    sub.add_parser("models", help="list model aliases and whether each is in the local cache")
    down = sub.add_parser("download", help="download a model into the local Hugging Face cache")
    down.add_argument("model", help="alias or hub id")


def _add_model(group):
    """The model and where it runs (generate and score)."""
    group.add_argument("-m", "--model", default="small",
                       help="alias (see 'tunesmith models'), hub id or checkpoint folder (default: small)")
    group.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    group.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    group.add_argument("--quantize", choices=quantize_choices(), default=None,
                       help="MusicGen: weight-only int8, or int4 (CPU only), decoder weights; Stable Audio and "
                            "ACE-Step: int8 DiT and VAE decoder products (CPU only): faster, slightly less faithful")
    group.add_argument("--lora", action="append", default=None, metavar="PATH[@SCALE]",
                       help="MusicGen and ACE-Step: a LoRA adapter merged into the model as it loads (a PEFT folder or "
                            "a .safetensors file), SCALE from -2 to 2 (default 1); repeat to stack, in order")
    group.add_argument("--seed", type=int, default=None, help="seed for reproducible output (default: random)")


def _add_threads(group):
    group.add_argument("--threads", type=int, default=None, help="CPU threads (default: one per core)")


def _add_meter(parser, bars: bool = True):
    """Tempo, key, meter and bars, which every family takes: from tunesmith.params.METER."""
    from ..params import METER

    group = parser.add_argument_group("tempo, key and meter (every family)")
    for dest, option in METER.items():
        if dest == "bars" and not bars:
            continue
        group.add_argument(option.flag, dest=dest, type=KIND_TYPES[option.kind], default=None,
                           metavar=option.metavar or KIND_METAVARS.get(option.kind), help=option.help)


def _add_output_policy(group):
    group.add_argument("--overwrite", action="store_true", help="replace existing output files")
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def quantize_choices() -> list[str]:
    from ..family import FAMILIES

    return list(dict.fromkeys(q for spec in FAMILIES.values() for q in spec.quantize))


def family_flags(command: str) -> dict[str, list[tuple[object, str]]]:
    """dest -> [(family spec, Option)] of every family option (and audio input) `command` takes, from the
    family table, in the table's order: an option several families share is one flag, and so is one flag
    that families give different options (--continue: MusicGen's audio input, Stable Audio 3's continuation)."""
    from ..family import FAMILIES

    flags: dict[str, list] = {}
    dests: dict[str, str] = {}  # flag -> its dest
    for spec in FAMILIES.values():
        entries = [(name, option) for name, option in spec.params.items()
                   if option.flag and (command == "generate" or option.score)]
        if command == "generate":
            entries.append((audio_dest(spec), spec.audio_input))
        for dest, option in entries:
            flags.setdefault(dests.setdefault(option.flag, dest), []).append((spec, option))
    return flags


def owner(owners: list, family: str):
    """The Option of `family` among a flag's owners (family_flags); None when the family has none."""
    return next((option for spec, option in owners if spec.name == family), None)


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
        repeated = any(o.kind == "spans" for _, o in owners)  # given once or more: a list
        group.add_argument(option.flag, dest=dest, type=KIND_TYPES[option.kind], metavar=metavar, default=None,
                           help=help, **({"action": "append"} if repeated else {}))


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
