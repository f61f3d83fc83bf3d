"""Each alias carries its weights' licence: `tunesmith models` shows it and every clip names it."""

from __future__ import annotations

from tunesmith.cli import main
from tunesmith.hub import ALIASES, LICENCES, STEM_MODELS, licence_of


def test_every_alias_names_a_known_licence():
    assert all(info.licence in LICENCES for info in ALIASES.values())
    by_family = {}
    for info in ALIASES.values():
        by_family.setdefault(info.family, set()).add(info.licence)
    assert by_family == {"musicgen": {"CC-BY-NC-4.0"}, "stable_audio": {"Stability-Community"}, "acestep": {"MIT"},
                         "stable_audio3": {"Stability-Community"}}
    assert "non-commercial" in LICENCES["CC-BY-NC-4.0"]


def test_licence_of_an_alias_a_hub_id_and_a_folder(tmp_path):
    assert licence_of("style") == licence_of("facebook/musicgen-style") == "CC-BY-NC-4.0"
    assert licence_of("sao-small") == "Stability-Community" and licence_of("acestep-2b") == "MIT"
    assert {licence_of(name) for name in STEM_MODELS} == {licence_of(repo) for repo in STEM_MODELS.values()} == {"MIT"}
    assert licence_of(str(tmp_path)) is None and licence_of("someone/their-musicgen") is None


def test_models_lists_each_licence(capsys):
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "licence" in lines[0].split()
    rows = {line.split()[0]: line for line in lines[1:]}
    assert "CC-BY-NC-4.0" in rows["small"] and "Stability-Community" in rows["sao"] and "MIT" in rows["acestep"]


def test_clips_name_their_licence(mono_model):
    clip, = mono_model.generate("calm piano", duration=0.1, seed=1)
    assert clip.params["licence"] is None  # a local folder: its own model card says
    name, mono_model.name = mono_model.name, "small"
    try:
        clip, = mono_model.generate("calm piano", duration=0.1, seed=1)
    finally:
        mono_model.name = name
    assert clip.params["licence"] == "CC-BY-NC-4.0"
