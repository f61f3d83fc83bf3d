"""Tiny Stable Audio 3 pipelines, built once per session."""

import pytest

from .tiny import save_tiny_pipeline


@pytest.fixture(scope="session")
def sa3_ckpt(tmp_path_factory):
    """(folder, diffusers StableAudio3Pipeline): a tiny post-trained Small (plain attention, ping-pong)."""
    folder = tmp_path_factory.mktemp("sa3")
    return folder, save_tiny_pipeline(folder)


@pytest.fixture(scope="session")
def sa3_base_ckpt(tmp_path_factory):
    """A tiny base Medium: differential attention, Euler steps, guidance."""
    folder = tmp_path_factory.mktemp("sa3-base")
    return folder, save_tiny_pipeline(folder, seed=1, differential=True, post_trained=False)


@pytest.fixture(scope="session")
def sa3_model(sa3_ckpt):
    import tunesmith

    return tunesmith.load(sa3_ckpt[0], device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def sa3_base_model(sa3_base_ckpt):
    import tunesmith

    return tunesmith.load(sa3_base_ckpt[0], device="cpu", dtype="float32")
