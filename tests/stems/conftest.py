"""Tiny random Demucs bags, built once per session."""

import pytest
import torch

from .tiny import save_bag


@pytest.fixture(scope="session")
def bag_folder(tmp_path_factory):
    return save_bag(tmp_path_factory.mktemp("htdemucs"))


@pytest.fixture(scope="session")
def stem_model(bag_folder):
    from tunesmith.stems import load_stem_model

    return load_stem_model(bag_folder, device="cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny models gain nothing from threads, and on a busy machine two OpenMP threads spin-wait on
    each other (a 0.1 s separation takes seconds); the thread count is put back afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
