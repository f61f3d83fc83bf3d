"""The server's names for request parameters, from the family table: each option's JSON field in POST
/api/jobs and in mlx-audiogen's POST /api/generate, so that a refusal (an InvalidParameter) names the field
the client sent, not the API's keyword or the CLI's flag."""

from __future__ import annotations

from ..family import FAMILIES, FamilySpec
from ..params import COMMON


def job_names() -> dict[str, str]:
    """API keyword -> POST /api/jobs field, where they differ (prompts -> prompt, audio_prompt -> continuation)."""
    tables = [COMMON, *(spec.params for spec in FAMILIES.values())]
    return {name: option.field for table in tables for name, option in table.items() if option.field}


def compat_names(spec: FamilySpec) -> dict[str, str]:
    """API keyword -> mlx-audiogen's POST /api/generate field for a model of this family (duration -> seconds,
    MusicGen's cfg -> guidance_coef, Stable Audio's -> cfg_scale, ...)."""
    names = {name: option.compat for name, option in {**COMMON, **spec.params}.items() if option.compat}
    if spec.compat_audio:
        names["audio_prompt"] = spec.compat_audio
    return names
