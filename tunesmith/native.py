"""Build a C kernel file once per machine with the system C compiler, for the CPU it runs on.

The library is cached per source text, compiler and CPU (~/.cache/tunesmith/kernels, or
$TUNESMITH_CACHE/kernels; where that folder cannot be written, built afresh in a temporary folder
each run). Every family's C kernels (musicgen/cpu_kernels.c, diffusion/kernels.c) are built here.

OpenMP: the library links libgomp.so.1 by name, and torch has already loaded its own libgomp.so.1,
so both share one thread pool (two pools would fight over the cores).
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from .paths import cache_root

FLAGS = ["-O3", "-fopenmp", "-shared", "-fPIC"]


def cache_dir() -> Path:
    return cache_root() / "kernels"


def cpu_signature() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [line for line in info.splitlines() if line.startswith(("model name", "flags"))]
        return "\n".join(dict.fromkeys(lines))
    except OSError:
        return platform.processor()


def _compile(compiler: str, flags: list[str], source: Path, target: Path):
    """Build beside the target, then rename: no half-written library, even with runs side by side."""
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        subprocess.run([compiler, *flags, str(source), "-o", str(built)], check=True, capture_output=True, timeout=120)
        os.replace(built, target)


def build(compiler: str, source: Path, march: str = "native") -> Path:
    """The library built from `source` for `march` (gcc's -march: this CPU, or an older instruction set on
    it, such as x86-64-v3 for AVX2), named after its folder and file: musicgen_cpu_kernels-<key>.so."""
    flags = [*FLAGS, f"-march={march}"]
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([source.read_text(), version, cpu_signature(), *flags]).encode()).hexdigest()[:16]
    name = f"{source.parent.name}_{source.stem}-{key}.so"
    folder = cache_dir()
    if (folder / name).exists():
        return folder / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryDirectory(dir=folder).cleanup()  # writable?
    except OSError:
        # A read-only cache must not cost the fast path: build for this process only (about a
        # second). The folder stays, as the library stays loaded until the process ends.
        folder = Path(tempfile.mkdtemp(prefix="tunesmith-kernels-"))
    _compile(compiler, flags, source, folder / name)
    return folder / name


def why_not(compiler: str, err: Exception) -> str:
    """A failed build or load, in one line."""
    if isinstance(err, subprocess.CalledProcessError):
        lines = [line for line in (err.stderr or b"").decode(errors="replace").splitlines() if "error" in line]
        return f"{compiler} failed: {lines[0].strip() if lines else f'exit status {err.returncode}'}"
    if isinstance(err, subprocess.TimeoutExpired):
        return f"{compiler} took over {err.timeout:g} s"
    if isinstance(err, FileNotFoundError) and err.filename == compiler:
        return f"C compiler {compiler} not found"
    return str(err)
