"""The wheel holds every file of the package that git has (C kernels, the server's page, ...): an
editable install reads the source tree and cannot show a file the wheel forgot."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def git_files(*paths: str) -> list[str]:
    """Tracked files and new ones git does not ignore: what a commit of this tree would hold."""
    return subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *paths], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout.split()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout")
    source = tmp_path_factory.mktemp("source")
    for name in git_files("pyproject.toml", "README.md", "tunesmith"):  # a clean copy: no caches, no builds
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(out), str(source)], check=True, capture_output=True)
    return next(out.glob("tunesmith-*.whl"))


def test_wheel_holds_every_package_file(wheel):
    packaged = {n for n in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in n}
    tracked = {n for n in git_files("tunesmith") if (REPO / n).is_file()}
    assert {"tunesmith/diffusion/kernels.c", "tunesmith/musicgen/cpu_kernels.c",
            "tunesmith/server/static/index.html"} <= packaged
    assert packaged == tracked, (sorted(tracked - packaged), sorted(packaged - tracked))


def test_every_package_folder_is_a_package():
    folders = {Path(n).parent for n in git_files("tunesmith") if n.endswith(".py")}
    assert [str(f) for f in sorted(folders) if not (REPO / f / "__init__.py").is_file()] == []
