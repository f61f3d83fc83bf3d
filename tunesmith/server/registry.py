"""The models a server offers (-m), known by family and longest clip before any of them loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidParameter
from ..models import ModelSpec, describe

# The names mlx-audiogen's clients send for "the default model of this family".
FAMILY_ALIASES = {"musicgen": "musicgen", "stable_audio": "stable_audio", "acestep": "acestep"}


@dataclass(frozen=True)
class Entry:
    name: str  # as given with -m: an alias, hub id or folder
    spec: ModelSpec

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def source(self) -> str | Path:
        """What tunesmith.load takes: the folder when describe found one, else the name."""
        return self.spec.folder or self.name


class Registry:
    def __init__(self, entries: list[Entry]):
        if not entries:
            raise InvalidParameter("a server needs at least one model (-m)")
        self.entries = {e.name: e for e in entries}
        self.default = entries[0]

    @classmethod
    def describe(cls, names: list[str]) -> "Registry":
        """Each name described (family, longest) without loading weights; hub ids are downloaded here,
        at start, so that a mistake shows before the server listens."""
        return cls([Entry(n, describe(n)) for n in dict.fromkeys(names)])

    def find(self, name: str | None) -> Entry:
        """A registered name; "musicgen" / "stable_audio" (mlx-audiogen's names) / "acestep" mean the first registered
        model of that family; None the default (the first -m)."""
        if name is None or name == "":
            return self.default
        if name in self.entries:
            return self.entries[name]
        if name in FAMILY_ALIASES:
            for e in self.entries.values():
                if e.family == name:
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
