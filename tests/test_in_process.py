"""The command run in the test process (tests/in_process.py) answers as its own process does, and leaves the
test process as it found it."""

import logging
import os
import warnings

import pytest
import torch

from .in_process import honoured, run_cli
from .test_cli import _in_a_process


@pytest.mark.parametrize("args", [["models"], ["--help"], ["generate", "jazz", "-d", "0"], ["generat", "jazz"],
                                  ["download", "./nowhere"]])
def test_the_same_status_and_output_as_a_process(args, tmp_path):
    inside, outside = run_cli(args, tmp_path), _in_a_process(args, tmp_path, {})
    assert (inside.returncode, inside.stdout, inside.stderr) == (outside.returncode, outside.stdout, outside.stderr)


def test_the_hub_variables_are_read_for_the_run(tmp_path):
    from huggingface_hub import constants

    before = (constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE)
    proc = run_cli(["download", "small"], env={"HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "0",
                                               "HF_ENDPOINT": "http://127.0.0.1:9", "HTTPS_PROXY": "",
                                               "https_proxy": ""})
    assert proc.returncode == 1 and "(127.0.0.1: connection refused)" in proc.stderr, proc.stderr
    assert (constants.HF_HUB_CACHE, constants.HF_HUB_OFFLINE) == before


def test_a_run_leaves_the_process_as_it_was(mono_ckpt, tmp_path):
    import tunesmith.generation as generation

    torch.manual_seed(7)
    state = (os.getcwd(), dict(os.environ), torch.get_num_threads(), generation._pinned, torch.get_rng_state())
    threads = 2 if torch.get_num_threads() != 2 else 1
    proc = run_cli(["generate", "jazz", "-m", str(mono_ckpt[0]), "-d", "0.2", "--seed", "5", "--threads", str(threads),
                    "-o", "x.wav", "--quiet"], cwd=tmp_path, env={"TUNESMITH_DEBUG": "1"})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "x.wav").is_file() and proc.stdout.strip() == "x.wav"
    after = (os.getcwd(), dict(os.environ), torch.get_num_threads(), generation._pinned, torch.get_rng_state())
    assert after[:4] == state[:4] and torch.equal(after[4], state[4])


def test_a_crash_is_status_1_with_its_traceback(monkeypatch):
    import tunesmith.cli as cli

    def crash(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "cmd_models", crash)
    proc = run_cli(["models"], env={"TUNESMITH_DEBUG": "1"})  # main() lets the bug out
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "RuntimeError: a bug" in proc.stderr


def test_warnings_and_library_logs_reach_stderr(monkeypatch):
    import tunesmith.cli as cli

    def chatty(args):
        warnings.warn("a library's warning", UserWarning)
        warnings.warn("deprecated in a library", DeprecationWarning)  # hidden, as a new interpreter hides it
        logging.getLogger("some.library").warning("a library's log record")
        logging.getLogger("some.library").info("below the last resort's level")
        return 0

    monkeypatch.setattr(cli, "cmd_models", chatty)
    proc = run_cli(["models"])
    assert proc.returncode == 0
    assert "UserWarning: a library's warning" in proc.stderr and "a library's log record\n" in proc.stderr
    assert "deprecated" not in proc.stderr and "below" not in proc.stderr


def test_variables_read_once_get_a_process_of_their_own():
    assert honoured({"HF_HUB_CACHE": "x", "TUNESMITH_FFMPEG": "system", "PATH": "/bin"})
    assert not honoured({"OMP_NUM_THREADS": "1"}) and not honoured({"TUNESMITH_CPU_KERNELS": "0"})
