"""The models a server offers (-m), known by family and longest clip before any of them loads.

Clients know each model by a public name: an alias or hub id as given, a folder by its own name (made
unique: name-2, ...), never by its path on the server. The -m string as typed is accepted too."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidParameter
from ..models import ModelSpec, describe

# The names mlx-audiogen's clients send for "the default model of this family" -> the families each may mean, in
# order: "stable_audio" is Stable Audio Open's, else Stable Audio 3's (the same fields reach both).
FAMILY_ALIASES = {"musicgen": ("musicgen",), "stable_audio": ("stable_audio", "stable_audio3"),
                  "acestep": ("acestep",), "stable_audio3": ("stable_audio3",)}


@dataclass(frozen=True)
class Entry:
    name: str  # public: what clients send and see
    spec: ModelSpec
    given: str = ""  # as given with -m (an alias, hub id or folder); the job store keeps this one

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def stored(self) -> str:
        """How the job store names the model: the -m string, which names the same model across restarts
        whatever the other -m (a public name-2 may not)."""
        return self.given or self.name

    @property
    def source(self) -> str | Path:
        """What tunesmith.load takes: the folder when describe found one, else the name as given."""
        return self.spec.folder or self.given or self.name


def public_names(given: list[str], specs: list[ModelSpec]) -> list[str]:
    """An alias or hub id keeps its name; a folder takes its own name, made unique. A folder never takes a
    family's name (musicgen, ...) unless it is of that family: clients send those to mean the family."""
    folders = [Path(g).expanduser().is_dir() for g in given]
    taken = {g for g, folder in zip(given, folders) if not folder}
    names = []
    for g, spec, folder in zip(given, specs, folders):
        if not folder:
            names.append(g)
            continue
        base = Path(os.path.abspath(os.path.expanduser(g))).name or "model"
        reserved = taken | {a for a, families in FAMILY_ALIASES.items() if spec.family not in families}
        name, n = base, 2
        while name in reserved:
            name, n = f"{base}-{n}", n + 1
        taken.add(name)
        names.append(name)
    return names


class Registry:
    def __init__(self, entries: list[Entry]):
        if not entries:
            raise InvalidParameter("a server needs at least one model (-m)")
        self.entries = {e.name: e for e in entries}
        self.by_given = {e.stored: e for e in entries}
        self.default = entries[0]

    @classmethod
    def describe(cls, names: list[str]) -> "Registry":
        """Each name described (family, longest) without loading weights; hub ids are downloaded here,
        at start, so that a mistake shows before the server listens."""
        given = list(dict.fromkeys(names))
        specs = [describe(g) for g in given]
        return cls([Entry(n, s, g) for n, s, g in zip(public_names(given, specs), specs, given)])

    def lookup(self, name: str) -> Entry | None:
        """The entry of a public name or of a -m string as typed; None when this server does not offer it."""
        return self.entries.get(name) or self.by_given.get(name)

    def public(self, stored: str) -> str:
        """The public name of a job's model (the store keeps the -m string); a model no longer offered is
        shown by its last path part, never by a server path."""
        entry = self.lookup(stored)
        if entry is not None:
            return entry.name
        path = Path(stored).expanduser()
        return path.name if path.is_absolute() or path.is_dir() else stored

    def find(self, name: str | None) -> Entry:
        """A registered name; "musicgen" / "stable_audio" (mlx-audiogen's names) / "acestep" / "stable_audio3" mean the
        first registered model of that family ("stable_audio": of Stable Audio 3 when no Stable Audio Open is
        offered); None the default (the first -m)."""
        if name is None or name == "":
            return self.default
        entry = self.lookup(name)
        if entry is not None:
            return entry
        if name in FAMILY_ALIASES:
            for family in FAMILY_ALIASES[name]:
                for e in self.entries.values():
                    if e.family == family:
                        return e
            raise InvalidParameter(f"this server has no {name} model (it has {', '.join(self.entries)})")
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise InvalidParameter(f"unknown model {shown!r}: this server has {', '.join(self.entries)}")

    def find_style(self) -> Entry:
        """The first MusicGen-Style model offered (mlx-audiogen's clients send "musicgen" with style audio)."""
        for e in self.entries.values():
            if e.spec.style:
                return e
        raise InvalidParameter(f"style_audio_path needs a MusicGen-Style model; this server has "
                               f"{', '.join(self.entries)} (start it with -m style)")

    def melody_models(self) -> list[Entry]:
        return [e for e in self.entries.values() if e.spec.melody]
