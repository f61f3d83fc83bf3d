"""The AVX2 build of cpu_kernels for the tests of its int8 and int4 kernels, on any CPU with AVX2: an AVX-512
CPU builds it on request (TUNESMITH_CPU_KERNELS=avx2), so both builds are tested wherever the suite runs."""

import os
import shutil
from pathlib import Path

import pytest

from tunesmith.musicgen import cpu_kernels


def cpu_has(flag: str) -> bool:
    try:
        return any(flag in line.split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("flags"))
    except OSError:
        return False


@pytest.fixture()
def avx2_kernels(monkeypatch):
    """cpu_kernels.library() as the AVX2 build for the test (every caller sees it), restored afterwards."""
    if not (cpu_has("avx2") and cpu_has("fma") and shutil.which("cc")) or os.environ.get("TUNESMITH_CPU_KERNELS") == "0":
        pytest.skip("no AVX2 CPU or no C compiler here")
    monkeypatch.setenv("TUNESMITH_CPU_KERNELS", "avx2")
    cpu_kernels.library.cache_clear()
    kernels = cpu_kernels.library()
    assert kernels is not None and kernels.int8_rounds_x and kernels.int4 and kernels.step and not kernels.bf16
    yield kernels
    monkeypatch.undo()
    cpu_kernels.library.cache_clear()
