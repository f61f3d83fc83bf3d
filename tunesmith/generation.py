"""What every model family shares around its own generation: the progress hook, the stage clock,
the output check of each clip and one retry on the CPU after a failed GPU run."""

from __future__ import annotations

import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable

import numpy as np
import torch

from .audio.checks import check_audio
from .audio.loops import loop_overhang, make_loop
from .clip import Clip
from .device import pick_device, pick_dtype
from .errors import InvalidParameter
from .params import shown_seconds
from .request import FAMILY_NAMES, Request, check_threads, named
from .threads import available_cores, busy_elsewhere, threads_for_load

log = logging.getLogger("tunesmith")


def place(device, dtype, threads, default_dtype: Callable[[torch.device], torch.dtype] | None = None
          ) -> tuple[torch.device, torch.dtype]:
    """What every family's from_pretrained starts with: the threads checked and set, the device picked,
    and the dtype: the one given, else default_dtype(device) where the family has its own, else
    pick_dtype's default."""
    threads = check_threads(threads)
    if threads is not None:
        pin_threads(threads)
    dev = pick_device(device)
    if dtype is None and default_dtype is not None:
        return dev, default_dtype(dev)
    return dev, pick_dtype(dtype, dev)


_pinned = False  # threads= given to a from_pretrained: used as given, never backed off


def pin_threads(threads: int):
    """torch's thread count for every later call, never backed off (threads=, and benchmarks that time and
    compare tunesmith beside a reference on the same threads). The count is the process's, as torch's is."""
    global _pinned
    torch.set_num_threads(threads)
    _pinned = True


@contextmanager
def call_threads(device: torch.device):
    """torch's threads for one call on the CPU: no more than the cores this process may use, one fewer
    for each core other processes keep busy (sampled now), restored afterwards. A thread count the user
    chose (threads=, --threads, OMP_NUM_THREADS) stands. Logged at debug level: a notice before an error
    would break the CLI's one line per bad input."""
    if device.type != "cpu" or _pinned or "OMP_NUM_THREADS" in os.environ:
        yield
        return
    before = torch.get_num_threads()
    threads = threads_for_load(before, available_cores(), busy_elsewhere())
    if threads != before:
        log.debug("other processes keep cores busy: %d CPU threads for this call instead of %d", threads, before)
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads != before:
            torch.set_num_threads(before)


class Family:
    """Base of the model classes (MusicGen, StableAudio, AceStep). A family implements _plan (the request's
    checks that depend on the model), _run (-> audio and stage seconds), _clips and _move."""

    family = ""
    quantize_choices: tuple[str, ...] = ()  # what from_pretrained's quantize may be besides None
    device: torch.device
    dtype: torch.dtype
    name: str

    @classmethod
    def _open(cls, name_or_path, device, dtype, threads, quantize, default_dtype=None):
        """What every from_pretrained starts with -> (device, dtype, folder): quantize checked, the
        threads set, the device and dtype picked (place), the family's own checks of them (_check_placement),
        and only then the checkpoint's folder, downloaded if need be."""
        from .hub import resolve

        if quantize is not None and quantize not in cls.quantize_choices:
            choices = ["None", *(repr(q) for q in cls.quantize_choices)]
            raise InvalidParameter(f"quantize must be {', '.join(choices[:-1])} or {choices[-1]} for "
                                   f"{FAMILY_NAMES[cls.family]} models, got {quantize!r}")
        dev, dt = place(device, dtype, threads, default_dtype)
        cls._check_placement(dev, dt, quantize)
        return dev, dt, resolve(name_or_path)

    @staticmethod
    def _check_placement(device: torch.device, dtype: torch.dtype, quantize: str | None):
        """A family's refusals of a device, dtype and quantize that do not go together."""

    def _settings(self, duration: float, loop: bool, **own) -> dict:
        """What each clip's params start with: the model, the duration, the family's own settings, the
        device, the dtype, the loop and the licence of the model's weights (None for a local folder)."""
        from .hub import licence_of

        return dict(model=self.name, duration=duration, **own, device=str(self.device), dtype=str(self.dtype)[6:],
                    loop=loop, licence=licence_of(self.name))

    def generate_request(self, request: Request, progress: bool | Callable[[int, int], None] = False) -> list:
        """generate() for a request already checked by tunesmith.request.check_request (the CLI and the
        server check before loading the model)."""
        if request.family != self.family:
            raise InvalidParameter(f"this request was checked for {request.family} models, not {self.family}")
        plan = self._plan(request)
        if not (isinstance(progress, bool) or callable(progress)):
            raise InvalidParameter("progress must be True, False or a callable (done, total)")
        report = progress_reporter(progress)
        try:
            with call_threads(self.device):
                clips = self._clips(plan, self._run(plan, report))
            if self.device.type != "cpu" and not all(c.check.ok for c in clips):
                problems = next(c.check.summary() for c in clips if not c.check.ok)
                raise DeviceOutputError(problems)
        except (RuntimeError, DeviceOutputError) as err:
            if self.device.type == "cpu":
                raise
            log.warning("generation on %s failed (%s); retrying once on the CPU", self.device, one_line(err))
            clips = self._retry_on_cpu(plan, report)
        finally:
            if hasattr(report, "close"):
                report.close()
        if request.meter is not None:  # as asked: the prompt of a text family already carries them
            for clip in clips:
                clip.params.update(request.meter.params())
        return clips

    def use_lora(self, lora=None) -> bool:
        """Generate with this LoRA adapter set from now on, swapped into the loaded weights without reloading
        (the server's per-job adapters): lora as load(lora=...) takes it; None or []: the base model. The
        previous set is reverted exactly first; the same set again changes nothing (returns False). Needs a
        model loaded with swap_lora=True."""
        swap = getattr(self, "_swap", None)
        if swap is None:
            raise InvalidParameter(f"use_lora: load this {FAMILY_NAMES[self.family]} model with swap_lora=True "
                                   "to swap adapters")
        changed = swap.use(lora)
        self.lora = swap.specs
        return changed

    def lora_fitting(self):
        """What checking an adapter set against this model needs without the model (lora.Fitting), for a model
        that swaps adapters (swap_lora=True) of a family with a lora_locator; None otherwise. A server records
        it at load and checks each job's set at submit."""
        from .family import FAMILIES
        from .lora import Fitting

        swap = getattr(self, "_swap", None)
        if swap is None or FAMILIES[self.family].lora_locator is None:
            return None
        return Fitting(self.family, self._locator_arguments(), dict(swap.shapes))

    def _locator_arguments(self) -> dict:
        """What the family's lora_locator takes for this model (lora.Fitting.arguments)."""
        return {}

    def _retry_on_cpu(self, plan, report) -> list:
        home, home_dtype = self.device, self.dtype
        cpu = torch.device("cpu")
        self._move(cpu, torch.float32)
        self.device, self.dtype = cpu, torch.float32
        try:
            return self._clips(plan, self._run(plan, report))
        finally:
            self._move(home, home_dtype)
            self.device, self.dtype = home, home_dtype

    def _plan(self, request: Request):
        raise NotImplementedError

    def _run(self, plan, report) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def _clips(self, plan, run: tuple[torch.Tensor, dict]) -> list:
        raise NotImplementedError

    def _move(self, device: torch.device, dtype: torch.dtype):
        raise NotImplementedError


def generated_seconds(request: Request, longest: float | None = None) -> float:
    """The seconds to generate for a request: its duration, and for a loop the overhang that joins it;
    refused past `longest`, the most this model makes at once (None: no limit, as MusicGen windows)."""
    seconds = request.duration + (loop_overhang(request.duration) if request.loop else 0.0)
    if longest is not None and seconds > longest + 1e-9:
        what = (f"a loop of {request.duration:g} s (with {seconds - request.duration:.2f} s more to join it)"
                if request.loop else f"{request.duration:g} s")
        limit = shown_seconds(longest)
        raise InvalidParameter(f"{named('duration')}: {what} is longer than the {limit} s this model makes at once")
    return seconds


class StageClock:
    """Wall seconds per stage, synchronising the GPU so that each stage is charged its own work."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}
        self._inner: dict[str, float] = {}
        self._last = time.perf_counter()

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def lap(self, stage: str):
        """Charge the time since the last lap to `stage`, less what timed() charged elsewhere meanwhile."""
        now = self._now()
        inner = sum(self._inner.values())
        self.seconds[stage] = now - self._last - inner
        self.seconds.update(self._inner)
        self._inner = {}
        self._last = now

    def timed(self, stage: str, fn):
        """fn, with its calls charged to `stage`."""
        def wrapper(*args):
            start = self._now()
            try:
                return fn(*args)
            finally:
                self._inner[stage] = self._inner.get(stage, 0.0) + self._now() - start
        return wrapper


class DeviceOutputError(Exception):
    pass


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def progress_reporter(progress, desc: str = "generating", unit: str = "step"):
    """True -> a tqdm bar on stderr (labelled `desc`, counting `unit`s), or, when stderr is no terminal (a log, a
    pipe), a line per tenth done (LogLines); a callable is used as is; False -> None."""
    if progress is False:
        return None
    if callable(progress):
        return progress
    if not _is_terminal(sys.stderr):
        return LogLines(desc, unit)
    from tqdm import tqdm

    class Bar:
        def __init__(self):
            self.bar = None

        def __call__(self, done: int, total: int):
            if self.bar is None:
                self.bar = tqdm(total=total, unit=unit, file=sys.stderr, desc=desc)
            self.bar.update(done - self.bar.n)

        def close(self):
            if self.bar is not None:
                self.bar.close()

    return Bar()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


class LogLines:
    """Progress for a log: `generating: 30% (15/50 steps)` each time another tenth is done (11 lines at most per
    pass), where a bar's redraws would flood it. A count that goes back (a retry on the CPU) starts a new pass."""

    def __init__(self, desc: str, unit: str, stream=None):
        self.desc, self.unit, self.stream = desc, unit, stream
        self.tenth, self.done = -1, 0

    def __call__(self, done: int, total: int):
        if done < self.done:
            self.tenth = -1
        self.done = done
        tenth = min(done * 10 // total, 10) if total > 0 else 10
        if tenth > self.tenth:
            self.tenth = tenth
            print(f"{self.desc}: {tenth * 10}% ({done}/{total} {self.unit}s)", file=self.stream or sys.stderr,
                  flush=True)


def clips_of_rows(rows: list, audio, sample_rate: int, settings: dict, seconds: dict,
                  loop_duration: float | None = None) -> list:
    """One Clip per (schedule, seed) row of `audio` (rows, channels, samples), each checked; with
    loop_duration, each made a seamless loop of that length first. For families whose rows are one
    prompt each (the diffusion families)."""
    audios = [np.ascontiguousarray(a, dtype=np.float32) for a in audio]
    if loop_duration is not None:
        audios = [make_loop(a, sample_rate, loop_duration) for a in audios]
    return [Clip(a, sample_rate, schedule[0][1], seed, dict(settings), check, dict(seconds))
            for (schedule, seed), a, check in zip(rows, audios, checks_of(audios, sample_rate))]


def checks_of(audios: list[np.ndarray], sample_rate: int) -> list:
    """check_audio of each clip, a batch's at once on the available cores: numpy's FFTs and sums release the
    GIL, and on a GPU the checks, on the CPU, took longer than the decoding (16 clips of 10 s: BENCHMARKS.md)."""
    if len(audios) < 2:
        return [check_audio(a, sample_rate) for a in audios]
    with ThreadPoolExecutor(min(len(audios), available_cores())) as pool:
        return list(pool.map(lambda a: check_audio(a, sample_rate), audios))
