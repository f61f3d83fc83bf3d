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


@pytest.fixture(autouse=True)
def _threads_as_on_an_idle_machine(monkeypatch):
    """A CPU generation runs one thread fewer for each core other processes keep busy (generation.call_threads),
    so on a busy machine (CI's, a developer's) two runs a test compares could get different thread counts, and
    float sums that differ in the last bit (seen: a LoRA swap against a load-time merge, 8e-8 apart). Tests see
    an idle machine; tests/test_threads.py sets the load it tests."""
    from tunesmith import generation

    monkeypatch.setattr(generation, "busy_elsewhere", lambda: 0.0)


@pytest.fixture(autouse=True)
def _float32_means_float32_on_gpu(request):
    """GPU tests compare float32 on CUDA with the CPU to 1e-4 or exactly: cuDNN's convolutions default to
    TF32 (a 10-bit mantissa), which is no float32 to compare, so it is off for them (matmuls' already is).
    tunesmith leaves these process-wide flags to the application: its float32 parts on CUDA (EnCodec, the
    VAEs, the text encoders) gain TF32's speed, at an error far below hearing."""
    if request.node.get_closest_marker("gpu") is None:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(autouse=True)
def _tiny_weights_pass_the_output_check_on_gpu(request, monkeypatch):
    """On a GPU a clip that fails its output check is made again on the CPU (generation.py), which a GPU test
    would take for a CUDA failure, and the tiny random checkpoints' audio fails it: for GPU tests
    random_weights_check counts only what a broken device run gives."""
    if request.node.get_closest_marker("gpu") is None:
        return
    from tunesmith import generation

    from .random_weights import random_weights_check

    monkeypatch.setattr(generation, "check_audio", random_weights_check)  # where every family's clips are checked


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
