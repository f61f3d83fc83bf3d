"""What generate and score share: the request's values from the flags (each family's options, its audio
input, finishing), checked before any model loads, and the model itself."""

from __future__ import annotations

from ..errors import InvalidParameter
from .parser import audio_dest, family_flags, owner


def options_of(args, family: str) -> dict:
    """The family options given on the command line (the family's defaults fill in the rest; an option
    of another family is refused by check_request with its flag named). A text option read from a file
    (--lyrics FILE) is read here, or taken as given (--lyrics-text TEXT). A flag that families give
    different options (--continue) is the option of `family`'s."""
    from ..family import FAMILIES

    options = {}
    for dest, owners in family_flags(args.command).items():
        spec, option = owners[0]
        own = owner(owners, family)
        if own is not None:
            option = own
        if option is FAMILIES[family].audio_input or own is None and option is spec.audio_input:
            continue  # the audio input is audio_prompt (audio_prompt_of)
        name = next(n for s, o in owners if o is option for n, p in s.params.items() if p is option)
        if option.kind == "textfile":
            file, text = getattr(args, f"{dest}_file", None), getattr(args, f"{dest}_text", None)
            if file is not None and text is not None:
                raise InvalidParameter(f"give the {name} either as {option.flag} FILE or as {option.flag}-text TEXT, "
                                       "not both")
            value = option.read(file) if file is not None else text
        else:
            value = getattr(args, dest, None)
        if isinstance(value, list) and option.kind == "span":  # a flag another family repeats
            if len(value) > 1 and own is not None:
                raise InvalidParameter(f"{option.flag} is given once for {FAMILIES[family].display} models (one "
                                       f"span), got {len(value)}")
            value = value[0]
        if value is not None:
            options[name] = value
    return options


def _given(args, dest: str, option) -> bool:
    if option.kind == "textfile":
        return getattr(args, f"{dest}_file", None) is not None or getattr(args, f"{dest}_text", None) is not None
    return getattr(args, dest, None) is not None


def audio_prompt_of(args, family: str):
    """The family's audio input flag (MusicGen's --continue, Stable Audio's and ACE-Step's --init-audio); another
    family's is refused with what this family takes instead."""
    from ..family import FAMILIES

    spec = FAMILIES[family]
    own, flags = audio_dest(spec), family_flags(args.command)
    if any(getattr(args, audio_dest(other), None) is not None for other in FAMILIES.values()
           if audio_dest(other) != own and owner(flags.get(audio_dest(other), []), family) is None):
        raise InvalidParameter(spec.other_audio)
    return getattr(args, own)


def describe_model(args, check):
    """The model's family and longest clip (models.describe). When its folder cannot say, the values are
    checked first as the flags' family would check them: a value's own mistake is named before the folder's.
    The flags' family: the last in the table with an option of its own (none of an earlier family's) given;
    else the first."""
    from ..errors import CheckpointError, ModelNotFound
    from ..family import FAMILIES
    from ..models import describe

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


def check_capabilities(args, spec):
    """An option that needs what the model may lack (an Option's `needs`: a melody or a style model), refused
    from the model's description (models.describe reads no weights), before it loads."""
    from ..family import FAMILIES
    from ..hub import ALIASES

    for dest, owners in family_flags(args.command).items():
        option = owner(owners, spec.family)
        if option is None or not option.needs or getattr(spec, option.needs) or not _given(args, dest, option):
            continue
        able = [name for name, info in ALIASES.items() if getattr(info, option.needs, False)]
        what = "follow a melody" if option.needs == "melody" else "take a style reference"
        raise InvalidParameter(f"{option.flag}: {args.model} cannot {what}: use a {FAMILIES[spec.family].display}"
                               f" {option.needs} model (-m {' or -m '.join(able)}, or such a folder)")


def check_quantize(args, family: str):
    from ..family import FAMILIES

    spec = FAMILIES[family]
    if args.quantize is None:
        return
    if not spec.quantize:
        offering = [s for s in FAMILIES.values() if s.quantize]
        raise InvalidParameter(f"--quantize applies to {_and(s.display for s in offering)} models; {spec.display} "
                               "models run unquantized")
    if args.quantize not in spec.quantize:
        offering = [s for s in FAMILIES.values() if args.quantize in s.quantize]
        others = [s for s in FAMILIES.values() if s.quantize and args.quantize not in s.quantize]
        values = "/".join(dict.fromkeys(q for s in others for q in s.quantize))
        where = ", on the CPU" if all(s.quantize_cpu for s in others) else ""
        raise InvalidParameter(f"--quantize {args.quantize} applies to {_and(s.display for s in offering)} models "
                               f"({_and(s.display for s in others)}: {values}{where})")
    if spec.quantize_cpu and args.device not in ("auto", "cpu"):
        raise InvalidParameter(f"--quantize {args.quantize} is for the CPU with {spec.display} models")


def _and(names) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def meter_of(args) -> dict:
    """--bpm, --key, --time-signature, --bars as check_request takes them (tunesmith.params.METER)."""
    from ..params import METER

    return {name: getattr(args, name, None) for name in METER}


def check_lora(args, family: str | None = None):
    """--lora PATH[@SCALE]... checked before any model loads (tunesmith.lora.check_specs: a missing path, a scale
    outside -2..2, a file that is not safetensors, one line each), and refused for a family that takes none."""
    if not args.lora:
        return None
    from ..family import FAMILIES
    from ..lora import check_specs

    specs = check_specs(args.lora, "--lora")
    if family is not None and "lora" not in FAMILIES[family].loading:
        takers = [s.display for s in FAMILIES.values() if "lora" in s.loading]
        raise InvalidParameter(f"--lora applies to {_and(takers)} models, not {FAMILIES[family].display}")
    return specs


def load_model(args, spec):
    from ..models import load

    options = {"threads": getattr(args, "threads", None)}
    if args.quantize is not None:
        options["quantize"] = args.quantize
    if getattr(args, "lora", None):
        options["lora"] = check_lora(args, spec.family)
    return load(spec.folder or args.model, device=args.device, dtype=args.dtype, **options)


def finishing_of(args, duration: float) -> dict:
    """Clip.finish's arguments for audio of `duration` s, checked before any model loads. Values given
    are kept, and refused when they do not fit; defaults shrink to fit short audio (a video of half a
    second is still scored): the fade-out to a quarter of it at most, no loudness target under 0.4 s."""
    from ..audio.finishing import LOUDNESS_MIN_S

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


def finishing_requested(finishing: dict) -> bool:
    return bool(finishing["fade_in"] or finishing["fade_out"] or finishing["loudness"] is not None)
