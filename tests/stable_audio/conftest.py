"""Tiny Stable Audio Open checkpoints, built once per session."""

import pytest

from .tiny import save_tiny_pipeline


@pytest.fixture(scope="session")
def sao_ckpt(tmp_path_factory):
    """(folder, diffusers StableAudioPipeline): a tiny stable-audio-open-1.0 in the diffusers layout,
    4 kHz stereo, at most 0.512 s."""
    folder = tmp_path_factory.mktemp("sao")
    pipe = save_tiny_pipeline(folder)
    pipe.set_progress_bar_config(disable=True)
    return folder, pipe


@pytest.fixture(scope="session")
def sao_model(sao_ckpt):
    import tunesmith

    return tunesmith.load(sao_ckpt[0], device="cpu", dtype="float32")
