"""Tiny random checkpoints, built once per session with transformers (the reference)."""

from __future__ import annotations

import pytest
import torch

from .checkpoints import save_checkpoint


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)


def _make(tmp_path_factory, name, **kwargs):
    folder = tmp_path_factory.mktemp(name)
    model = save_checkpoint(folder, **kwargs)
    return folder, model


@pytest.fixture(scope="session")
def mono_ckpt(tmp_path_factory):
    """(folder, transformers reference model): mono, safetensors, T5 states projected."""
    return _make(tmp_path_factory, "mono")


@pytest.fixture(scope="session")
def stereo_ckpt(tmp_path_factory):
    return _make(tmp_path_factory, "stereo", stereo=True, seed=2)


@pytest.fixture(scope="session")
def mono_model(mono_ckpt):
    from tunesmith import MusicGen

    return MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32")


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu need CUDA; CI has none, so they skip there."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def style_ckpt(tmp_path_factory):
    """(folder, {"state", "mert"} references): a tiny MusicGen-Style in audiocraft's layout (the MusicGen tests'
    and the server's)."""
    from .musicgen.style_checkpoint import save_style_checkpoint

    folder = tmp_path_factory.mktemp("style")
    return folder, save_style_checkpoint(folder, seed=5)
