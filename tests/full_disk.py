"""Full disks for tests: a real one (a small tmpfs, where mounting is allowed) and /dev/full behind the
temporary name a writer uses (written_whole's), which fails its writes with ENOSPC anywhere on Linux."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")


@contextlib.contextmanager
def small_disk(folder: Path, size: str = "4m"):
    """A tmpfs of `size` mounted at `folder` (made here); the test is skipped where mounting is refused."""
    folder.mkdir(parents=True)
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)
    except OSError as err:
        pytest.skip(f"no mount command to make a small disk: {err}")
    if proc.returncode != 0:
        pytest.skip(f"a small tmpfs cannot be mounted here (needs root): {proc.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Write a file in `folder` until its disk refuses more (ENOSPC); delete it to give the space back."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError:
            pass
        try:  # the last few blocks
            while True:
                out.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def full_partial(path: Path) -> Path:
    """Make written_whole's temporary name for `path` a link to /dev/full: writing `path` fails, ENOSPC."""
    partial = path.with_name(f".{path.name}.partial{path.suffix}")
    os.symlink("/dev/full", partial)
    return partial
