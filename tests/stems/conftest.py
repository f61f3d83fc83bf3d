"""Tiny random Demucs bags, built once per session."""

import pytest

from .tiny import save_bag


@pytest.fixture(scope="session")
def bag_folder(tmp_path_factory):
    return save_bag(tmp_path_factory.mktemp("htdemucs"))


@pytest.fixture(scope="session")
def stem_model(bag_folder):
    from tunesmith.stems import load_stem_model

    return load_stem_model(bag_folder, device="cpu")
