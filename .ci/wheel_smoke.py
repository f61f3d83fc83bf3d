"""The installed wheel, checked from outside the source tree (.ci/run runs it in a fresh venv).

An editable install reads the source tree, so it cannot see a file the wheel forgot (the diffusion
kernels' kernels.c was one). This script imports the installed package, runs its command, and makes
one tiny clip per family on the CPU, failing if any family's compiled kernels are not in use.

    python .ci/wheel_smoke.py REPO      (REPO: the checkout, for the tests' tiny-checkpoint builders)
"""

from __future__ import annotations

import ctypes
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def fail(message: str):
    print(f"wheel smoke: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def main(repo: Path):
    import tunesmith

    installed = Path(tunesmith.__file__).resolve()
    if installed.is_relative_to(repo.resolve()):
        fail(f"tunesmith was imported from the checkout ({installed}), not from the installed wheel")
    print(f"wheel smoke: tunesmith {tunesmith.__version__} from {installed.parent}")
    tool = Path(sys.executable).with_name("tunesmith")
    for args in (["--help"], ["models"]):
        run = subprocess.run([str(tool), *args], capture_output=True, text=True)
        if run.returncode != 0:
            fail(f"tunesmith {' '.join(args)} exited {run.returncode}: {run.stderr.strip()[-300:]}")
    print("wheel smoke: tunesmith --help, tunesmith models")

    warnings = []  # a kernel fallback is a warning on the tunesmith logger: any of them fails the check

    class Keep(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    logging.getLogger("tunesmith").addHandler(Keep(logging.WARNING))
    sys.path.append(str(repo))  # after site-packages: the tests' checkpoint builders, not the package
    from tests.acestep.tiny import save_tiny_pipeline as save_acestep
    from tests.checkpoints import save_checkpoint
    from tests.stable_audio.tiny import save_tiny_pipeline as save_stable_audio

    with tempfile.TemporaryDirectory() as tmp:
        # family: (builder, seconds the tiny checkpoint makes, loading options). The diffusion families' CPU
        # path runs by default only where bfloat16 is native; int8 takes it on any x86 CPU.
        builders = {"musicgen": (save_checkpoint, 1.0, {}),
                    "stable_audio": (save_stable_audio, 0.5, {"quantize": "int8"}),
                    "acestep": (save_acestep, 10.0, {"quantize": "int8"})}
        for family, (save, seconds, options) in builders.items():
            folder = Path(tmp) / family
            save(folder)
            model = tunesmith.load(folder, device="cpu", **options)
            clip = model.generate("calm piano", duration=seconds, seed=1)[0]
            if not (clip.audio.size and np.isfinite(clip.audio).all()):  # random weights: no musical checks
                fail(f"{family}: the clip is empty or not finite")
            print(f"wheel smoke: {family}: {clip.audio.shape[1] / clip.sample_rate:.1f} s at {clip.sample_rate} Hz")

    from tunesmith.diffusion import ops
    from tunesmith.musicgen import cpu_kernels

    if warnings:
        fail(f"a warning was logged: {warnings[0]}")
    for name, get in (("MusicGen's", cpu_kernels.library), ("the diffusion models'", ops.kernels)):
        if get.cache_info().currsize == 0:  # cached on first use: empty means generation never asked for them
            fail(f"{name} CPU kernels were never asked for")
    if ops.kernels() is None:
        fail("the diffusion models' CPU kernels (diffusion/kernels.c) are not in use")
    if cpu_kernels.library() is None:
        # MusicGen's kernels need AVX-512 (int8 or bf16 products); without it torch's run, by design. The
        # wheel's source must still build here, so that a CPU with AVX-512 gets them.
        from tunesmith.native import build

        if "avx512f" in cpu_kernels._cpu_signature().split():
            fail("MusicGen's CPU kernels (musicgen/cpu_kernels.c) are not in use on a CPU with AVX-512")
        ctypes.CDLL(str(build(shutil.which("cc") or shutil.which("gcc") or "cc", cpu_kernels.SOURCE)))
        print("wheel smoke: MusicGen's kernels built (this CPU has no AVX-512: torch's kernels run)")
    print("wheel smoke: ok")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
