"""A full disk is NoSpace, one line naming what could not be written, from every writer."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.audio.io import write_audio, write_sndfile, written_whole
from tunesmith.errors import NoSpace

from ..full_disk import fill, full_partial, needs_dev_full, small_disk

AUDIO = np.zeros((1, 32000), np.float32)


@needs_dev_full
@pytest.mark.parametrize("name", ["out.wav", "out.flac"])
def test_libsndfile_writes_on_a_full_disk(tmp_path, name):
    full_partial(tmp_path / name)
    with pytest.raises(NoSpace) as caught:
        write_audio(tmp_path / name, AUDIO, 32000)
    assert str(caught.value) == f"cannot write {tmp_path / name}: no space left on the device"
    assert list(tmp_path.iterdir()) == []  # nothing half-written left


@needs_dev_full
def test_write_sndfile_names_what_it_was_writing(tmp_path):
    with pytest.raises(NoSpace, match="^cannot convert x.wav: no space left on the device$"):
        write_sndfile("/dev/full", AUDIO, 32000, "WAV", "PCM_16", "cannot convert x.wav")


@needs_dev_full
def test_written_whole_turns_enospc_into_no_space(tmp_path):
    full_partial(tmp_path / "up.bin")
    with pytest.raises(NoSpace, match=f"^cannot write {tmp_path / 'up.bin'}: no space left on the device$"):
        with written_whole(tmp_path / "up.bin") as partial:
            with open(partial, "wb", buffering=0) as out:
                out.write(b"x" * 4096)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["out.mp3", "out.wav"])
def test_a_real_full_disk(tmp_path, name):
    with small_disk(tmp_path / "disk", "1m") as disk:
        filler = fill(disk)
        with pytest.raises(NoSpace, match=f"^cannot write {disk / name}: no space left on the device$"):
            write_audio(disk / name, np.zeros((1, 320000), np.float32), 32000)  # ffmpeg encodes .mp3
        assert [p.name for p in disk.iterdir()] == ["filler"]
        filler.unlink()
        write_audio(disk / name, AUDIO, 32000)  # the space is back
