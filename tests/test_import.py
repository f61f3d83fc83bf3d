"""`import tunesmith`, `tunesmith --help` and `tunesmith models` load no torch: the package's names are
imported when first used, and the CLI imports the engines only inside the commands that run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "diffusers", "demucs", "fastapi")


def loaded_after(code: str) -> list[str]:
    """The heavy modules that a fresh interpreter holds after running `code` (from the repository root)."""
    probe = f"{code}\nimport sys\nprint('loaded:', *(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()[-1].split()[1:]


def run_cli(*args: str) -> str:
    return f"from tunesmith.cli import main\ntry:\n    main({list(args)!r})\nexcept SystemExit:\n    pass"


@pytest.mark.parametrize("code", ["import tunesmith", "import tunesmith; tunesmith.__version__; tunesmith.TunesmithError",
                                  run_cli("--help"), run_cli("generate", "--help"), run_cli("models")],
                         ids=["import", "light names", "--help", "generate --help", "models"])
def test_cheap_paths_load_no_torch(code):
    assert loaded_after(code) == []


def test_public_names_load_on_first_use():
    import tunesmith

    assert set(tunesmith.__all__) <= set(dir(tunesmith))
    for name in tunesmith.__all__:
        assert getattr(tunesmith, name) is not None
    from tunesmith.musicgen.model import MusicGen

    assert tunesmith.MusicGen is MusicGen
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        tunesmith.nothing  # noqa: B018
