"""The tunesmith command run inside the test process, as `python -m tunesmith ARGS` would run: its exit
status, stdout and stderr, with the run's working folder and environment, and nothing it changed left
behind. A new interpreter imports torch, transformers and diffusers again (4-5 s of CPU a run): the CLI
tests run in-process, and those where the process boundary is the point stay real subprocesses
(tests/test_cli.py's run(..., subprocess=True))."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import traceback
import warnings

import numpy as np
import torch

# Variables a run in this process honours: tunesmith reads them when it uses them (the proxies through
# urllib.request.getproxies), and huggingface_hub's constants, read when it is imported, are read again for
# the run (_hub_constants). Any other variable given to a run may have been read once, at an import or by a
# cached function (OMP_*, GOMP_*, TUNESMITH_CPU_KERNELS, ...): such a run gets its own process.
_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
HONOURED = {"HF_HUB_OFFLINE", "HF_HUB_CACHE", "HF_HOME", "HF_ENDPOINT", "TUNESMITH_FFMPEG", "TUNESMITH_DEBUG",
            "PATH", *_PROXIES, *(name.lower() for name in _PROXIES)}


def honoured(env: dict) -> bool:
    """Whether a run in this process honours every variable of `env`."""
    return set(env) <= HONOURED


def run_cli(args: list[str], cwd=None, env: dict | None = None) -> subprocess.CompletedProcess:
    """tunesmith.cli.main(args) as the command's process runs it -> CompletedProcess(args, returncode, stdout,
    stderr). An exception main() lets out is a crash: status 1 and its traceback on stderr, as Python prints it."""
    from tunesmith.cli import main

    out, err = io.StringIO(), io.StringIO()
    with _isolated(args, cwd, env or {}, err), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = _status(main(args), err)
        except SystemExit as exit:  # argparse's --help and its usage errors, sys.exit anywhere
            code = _status(exit.code, err)
        except Exception:
            err.write(traceback.format_exc())
            code = 1
    return subprocess.CompletedProcess([sys.executable, "-m", "tunesmith", *args], code, out.getvalue(),
                                       err.getvalue())


def _status(code, err) -> int:
    """What the process's exit status would be for sys.exit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=err)  # sys.exit("message"): printed, status 1
    return 1


@contextlib.contextmanager
def _isolated(args, cwd, env: dict, err):
    """The run's folder and environment, and afterwards everything a run may change put back: the folder,
    the environment, sys.argv, signal handlers, torch's threads, default dtype, grad mode and random states,
    the thread count tunesmith pins. Inside, Python's warnings and library log records that would reach a
    process's stderr go to `err`."""
    import tunesmith
    import tunesmith.generation as generation

    saved_env, saved_cwd, saved_argv = os.environ.copy(), os.getcwd(), sys.argv
    handlers = {s: signal.getsignal(s) for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)}
    torch_state = (torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled(),
                   torch.get_rng_state(), generation._pinned)
    random_states = (np.random.get_state(), random.getstate())
    os.environ.update({"HF_HUB_OFFLINE": "1", **{k: str(v) for k, v in env.items()}})  # as test_cli.run's process
    sys.argv = [os.path.join(os.path.dirname(tunesmith.__file__), "__main__.py"), *args]
    try:
        if cwd is not None:
            os.chdir(cwd)
        with _hub_constants(), _warnings_to(err), _library_logs_to(err):
            yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        for number, handler in handlers.items():
            if signal.getsignal(number) is not handler and handler is not None:
                signal.signal(number, handler)
        threads, dtype, grad, rng, generation._pinned = torch_state
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)
        torch.set_rng_state(rng)
        np.random.set_state(random_states[0])
        random.setstate(random_states[1])


@contextlib.contextmanager
def _hub_constants():
    """huggingface_hub's constants (HF_HUB_OFFLINE, HF_HUB_CACHE from HF_HOME, the endpoint) read again from
    the run's environment, as a new process reads them when it imports huggingface_hub; put back after."""
    from huggingface_hub import constants

    saved = dict(vars(constants))
    importlib.reload(constants)
    try:
        yield
    finally:
        for name in set(vars(constants)) - set(saved):
            delattr(constants, name)
        vars(constants).update(saved)


@contextlib.contextmanager
def _warnings_to(err):
    """Warnings under a new interpreter's filters (DeprecationWarning shown only for __main__), each written
    to `err` as Python writes it, rather than to pytest's record."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        try:
            yield
        finally:
            for w in caught:
                err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))


@contextlib.contextmanager
def _library_logs_to(err):
    """Log records as a process's stderr gets them: handlers writing to this process's stderr (transformers'
    own) write to `err`, and records that reach the root logger are written as logging's last resort writes
    them in a process whose root logger has no handlers (pytest's hold them here). Records from threads that
    were running before the run (other tests' servers) are not the run's."""
    streams = {id(sys.stderr), id(sys.__stderr__)}
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    swapped = [(h, h.setStream(err)) for lg in loggers for h in lg.handlers
               if type(h) is logging.StreamHandler and id(h.stream) in streams]
    before = {t.ident for t in threading.enumerate()} - {threading.get_ident()}
    last_resort = logging.StreamHandler(err)
    last_resort.setLevel(logging.WARNING)
    last_resort.addFilter(lambda record: record.thread not in before and not _handled_below_root(record))
    root = logging.getLogger()
    root.addHandler(last_resort)
    try:
        yield
    finally:
        root.removeHandler(last_resort)
        for handler, stream in swapped:
            handler.setStream(stream)


def _handled_below_root(record) -> bool:
    """Whether a handler of the record's logger or of one it propagates to (the root excepted) takes it."""
    logger = logging.getLogger(record.name)
    while logger is not None and logger is not logging.getLogger():
        if logger.handlers:
            return True
        logger = logger.parent if logger.propagate else None
    return False
