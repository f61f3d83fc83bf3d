"""Output files, decided and checked before any generation: names from prompts and seeds, stems beside
their clip, and what --wav-format cannot apply to."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..audio.names import clip_name, named_output, stem_name
from ..errors import TunesmithError

log = logging.getLogger("tunesmith")


def _unique(path: Path, taken: set[Path]) -> Path:
    candidate, n = path, 2
    while candidate.exists() or candidate in taken:
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate


def plan_outputs(output: str | None, rows: list[tuple[str, int | None]], overwrite: bool) -> list[Path]:
    """Output paths for (prompt, seed) rows, decided and checked before any generation.

    Auto-named files never replace anything; an explicit file is replaced only with --overwrite; a name
    without an extension is a WAV file (named_output).
    """
    from ..audio.io import check_output_path

    to_make = False
    if output is None or output.endswith(("/", os.sep)) or Path(output).is_dir():
        folder = Path(output) if output else Path(".")
        if folder.exists() and not folder.is_dir():
            raise TunesmithError(f"{folder} is a file: -o FOLDER/ takes a folder")
        if not folder.exists() and not folder.parent.is_dir():
            raise TunesmithError(f"output folder {folder} does not exist, nor does its parent")
        to_make = not folder.exists()  # made just before the first file is written (make_folder)
        taken: set[Path] = set()
        paths = []
        for prompt, seed in rows:
            name = clip_name(prompt, seed)
            paths.append(_unique(folder / name, taken))
            taken.add(paths[-1])
    else:
        base = named_output(output, ".wav")
        if len(rows) == 1:
            paths = [base]
        else:
            paths = [base.with_name(f"{base.stem}-{i}{base.suffix}") for i in range(1, len(rows) + 1)]
        clash = [p for p in paths if p.exists()]
        if clash and not overwrite:
            raise TunesmithError(f"{clash[0]} exists: choose another output or pass --overwrite")
    for p in paths:
        check_output_path(p, folder_to_make=to_make)
    return paths


def make_folder(folder: Path):
    """An output folder that -o named and that does not exist yet (its parent does): made just before the
    first file goes in, so that a refused or failed run leaves no empty folder behind."""
    if folder.is_dir():
        return
    try:
        folder.mkdir()
    except OSError as err:
        raise TunesmithError(f"cannot create {folder}: {(err.strerror or str(err)).lower()}") from None


def plan_stems(base: Path, stems: list[str], overwrite: bool, taken: set[Path] = frozenset()) -> dict[str, Path]:
    """The stem files of `base` (folder/NAME.EXT -> folder/NAME-STEM.EXT), checked as generate's outputs
    are; an existing one is replaced only with --overwrite. The folder may not exist yet when its parent
    does (cmd_stems creates it just before writing)."""
    from ..audio.io import check_output_path

    paths = {stem: base.with_name(stem_name(base.name, stem)) for stem in stems}
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


def write_stems(stems: dict, paths: dict[str, Path], wav_format: str):
    for name, stem in stems.items():
        stem.save(paths[name], wav_format=wav_format)
        print(paths[name])


def say_failed_check(name, check, strict: bool | None = None):
    """One line: what the output check found, that the file was kept and what to do (CheckResult.advice);
    strict: whether --strict was given (None: the command has no --strict)."""
    tail = "" if strict is None else " (--strict: exit status 3)" if strict else ", or --strict to make this an error"
    log.warning("%s failed the output check: %s: %s%s", name, check.summary(), check.advice(), tail)


def say_ignored_wav_format(wav_format: str, paths: list[Path]):
    """--wav-format sets WAV's samples; say so once where an output cannot take it."""
    if wav_format == "pcm16":
        return
    for suffix in sorted({p.suffix.lower() for p in paths} - {".wav"}):
        if suffix == ".flac" and wav_format == "float":
            log.warning("--wav-format float: FLAC has no float samples, so .flac files are written in 24 bits")
        elif suffix != ".flac":
            log.warning("--wav-format %s applies to .wav (and .flac) files: %s is encoded with its own codec",
                        wav_format, suffix)
