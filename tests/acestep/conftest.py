"""Tiny ACE-Step 1.5 pipelines, built once per session."""

import pytest

from .tiny import save_tiny_pipeline


@pytest.fixture(scope="session")
def ace_ckpt(tmp_path_factory):
    """(folder, diffusers AceStepPipeline): a tiny turbo pipeline, 48 kHz stereo, 25 latent frames a second."""
    folder = tmp_path_factory.mktemp("acestep")
    return folder, save_tiny_pipeline(folder)


@pytest.fixture(scope="session")
def ace_base_ckpt(tmp_path_factory):
    """A tiny base (guided) pipeline: the same parts, is_turbo False."""
    folder = tmp_path_factory.mktemp("acestep-base")
    return folder, save_tiny_pipeline(folder, seed=1, turbo=False)


@pytest.fixture(scope="session")
def ace_model(ace_ckpt):
    """The tiny turbo pipeline on the CPU in float32: diffusers' exact path (the default is bfloat16 on CPUs
    with native bfloat16)."""
    import tunesmith

    return tunesmith.load(ace_ckpt[0], device="cpu", dtype="float32")
