"""tunesmith models and tunesmith download: the aliases, their licences and the local cache."""

from __future__ import annotations

import logging

log = logging.getLogger("tunesmith")


def cmd_models(args) -> int:
    from ..family import FAMILIES
    from ..hub import ALIASES, cached_folder

    width = max(len(spec.display) for spec in FAMILIES.values()) + 2  # "Stable Audio 3" and a gap
    print(f"{'alias':<21}{'family':<{width}}{'hub id':<40}{'params':>7}  {'audio':<17}{'longest':<11}{'input':<22}"
          f"{'licence':<21}cached")
    for alias, info in ALIASES.items():
        cached = "yes" if cached_folder(info.repo) else ("no (gated)" if info.gated else "no")
        family = FAMILIES[info.family]
        follows = "text + melody" if info.melody else "text + style" if info.style else family.inputs
        audio = f"{info.sample_rate / 1000:g} kHz {'stereo' if info.channels == 2 else 'mono'}"
        longest = "long form" if info.longest is None else f"{info.longest:.1f} s"
        print(f"{alias:<21}{family.display:<{width}}{info.repo:<40}{info.params:>7}  {audio:<17}{longest:<11}"
              f"{follows:<22}{info.licence:<21}{cached}")
    return 0


def cmd_download(args) -> int:
    from ..errors import ModelNotFound
    from ..hub import HubUnavailable, download, is_checkpoint, local_folder, repo_for

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
        for repo in _also_needed(args.model, folder):
            log.info("%s also needs %s", args.model, repo)
            download(repo)
        print(folder)
    except HubUnavailable as err:
        todo = "unset HF_HUB_OFFLINE" if err.offline else "connect to the network and try again"
        raise ModelNotFound(f"{err}: downloading needs the network; {todo}") from None
    return 0


def _also_needed(model: str, folder) -> list[str]:
    """What the family of the checkpoint downloaded to `folder` needs besides it, from the family table: a text
    encoder in its own repository (stable-audio-open-small's T5, Stable Audio 3's T5Gemma)."""
    from ..errors import CheckpointError
    from ..family import FAMILIES
    from ..hub import ALIASES
    from ..models import family_of

    info = ALIASES.get(model)
    try:
        family = info.family if info is not None else family_of(folder)
    except CheckpointError:  # not a model that generates (a Demucs bag): nothing more
        return []
    return FAMILIES[family].repositories_needed(folder)
