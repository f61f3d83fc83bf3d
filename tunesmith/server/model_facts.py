"""What the page's model picker shows of a served model beyond GET /api/models' mlx-audiogen fields: the
family as people write it, the clip lengths this server takes, the licence of the weights, and whether it takes
LoRA adapters (GET /api/loras lists them)."""

from __future__ import annotations

from ..family import FAMILIES
from ..hub import LICENCES, licence_of
from .registry import Entry
from .spec import Limits


def model_facts(entry: Entry, limits: Limits) -> dict:
    family = FAMILIES[entry.family]
    longest = min(entry.spec.longest or limits.max_duration, limits.max_duration)
    licence = licence_of(entry.given or entry.name)  # None for a local folder: its own model card says
    return dict(family_name=family.display, shortest=family.shortest, max_duration=longest, licence=licence,
                licence_terms=LICENCES.get(licence) if licence else None, lora="swap_lora" in family.loading)
