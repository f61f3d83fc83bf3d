"""One worker thread owns the device: it loads models on first use (at most `loaded` stay in memory,
the least recently used is dropped), takes queued jobs from the store in batches, and writes their files.

A store write that ends a job (done, failed, queued again) and fails, on a full disk say, is kept and
retried before any new work: the thread never dies of it, and the job settles once the store takes writes.

A job is cancelled between decode steps: the progress callback raises Cancelled, which generate_request
lets through (it is no RuntimeError, so no retry on the CPU either).
"""

from __future__ import annotations

import gc
import logging
import sqlite3
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelNotFound, NoSpace, TunesmithError
from ..generation import one_line
from ..hub import naming_folder_flag
from ..request import batch_requests
from .fittings import Fittings
from .registry import Registry
from .spec import request_of
from .store import Job, Store

log = logging.getLogger("tunesmith.server")


class Cancelled(Exception):
    """Raised from the progress callback to stop a batch (deliberately not a RuntimeError)."""


@dataclass
class WorkerSettings:
    device: str = "auto"
    dtype: str | None = None  # the family's choice for the device
    loaded: int = 2  # models kept in memory
    max_batch: int = 16  # clips generated in one call
    keep_days: float = 7.0  # finished jobs older than this are pruned ...
    keep_jobs: int = 1000  # ... and the oldest beyond this many finished ones
    prune_every_s: float = 300.0
    # Stems models clients may ask for, by name -> what load_stem_model takes (a name or a folder); the
    # first is the default.
    stems_models: dict = field(default_factory=lambda: {"htdemucs": "htdemucs", "htdemucs_ft": "htdemucs_ft",
                                                        "htdemucs_6s": "htdemucs_6s"})
    # A model's public name -> [(adapter name, AdapterSpec)]: its set when a job names none (serve --lora)
    lora: dict = field(default_factory=dict)
    # serve --lora-dir: the adapters jobs name; with it, models of families that take adapters load with
    # swap_lora=True and each batch runs its jobs' set (Family.use_lora), kept merged until another set comes
    lora_dir: Path | None = None


class Worker:
    def __init__(self, store: Store, registry: Registry, settings: WorkerSettings):
        self.store, self.registry, self.settings = store, registry, settings
        self.models: OrderedDict[str, object] = OrderedDict()
        # Only what is running lives in memory; everything else is read from the store.
        self.progress: dict[str, tuple[int, int]] = {}
        self.cancelling: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0
        self._unsaved: list[tuple] = []  # store writes that failed, (method, args), retried in order
        self._said: str | None = None  # the store failure last logged (each is said once, not every second)
        self._batches = 0  # generate calls made (a hook for the tests and the benchmark, not an API)
        self.fittings = Fittings(getattr(store, "folder", None))  # each loaded model's LoRA shapes (submit checks)

    # ---- control, from request threads
    def start(self):
        self._thread = threading.Thread(target=self._loop, name="tunesmith-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0):
        """Stop at the next decode step; a job cut short is queued again for the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self):
        self._wake.set()

    def cancel_running(self, job_id: str):
        self.cancelling.add(job_id)

    def loaded_names(self) -> list[str]:
        return list(self.models)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ---- the thread
    def _loop(self):
        while not self._stop.is_set():
            try:
                self._save_unsaved()
                self._maybe_prune()
                jobs = self.store.claim(self.settings.max_batch)
            except Exception as err:  # the store failing (disk full, ...): say so, wait, try again
                self._say_store_failure(err)
                self._stop.wait(1.0)
                continue
            if self._said is not None:
                log.info("job store: working again")
                self._said = None
            if not jobs:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self._run(jobs)
            except (sqlite3.Error, TunesmithError) as err:  # a store read failing mid-job: the thread goes on
                self._say_store_failure(err)
            except Exception as err:  # a bug of ours must not stop the worker: its jobs fail in one line
                log.error("running jobs failed:\n%s", traceback.format_exc())
                for job in jobs:
                    self._end(job, f"internal error: {type(err).__name__}: {one_line(err)}")

    def _say_store_failure(self, err: Exception):
        said = one_line(err) if isinstance(err, TunesmithError) else traceback.format_exc(limit=3)
        if said != self._said:
            log.error("job store: %s", said)
            self._said = said

    def _record(self, write, *args):
        """A store write that settles a job; one that fails is kept, and retried before any new work."""
        if not self._unsaved:
            try:
                write(*args)
                return
            except Exception as err:
                self._say_store_failure(err)
        self._unsaved.append((write, args))

    def _save_unsaved(self):
        while self._unsaved:
            write, args = self._unsaved[0]
            write(*args)  # still failing: raises, and the loop waits and comes back
            self._unsaved.pop(0)

    def _maybe_prune(self):
        now = time.time()
        if now - self._last_prune >= self.settings.prune_every_s:
            self._last_prune = now
            pruned = self.store.prune(self.settings.keep_days * 86400, self.settings.keep_jobs, now)
            if pruned:
                log.info("pruned %d old jobs", pruned)

    def _run(self, jobs: list[Job]):
        if jobs[0].spec.get("kind") == "stems":  # batch_key keeps a stems job alone
            return self._run_stems(jobs[0])
        entry = self.registry.lookup(jobs[0].model)
        requests = []
        for job in jobs:
            try:
                if entry is None:
                    raise TunesmithError(f"model {self.registry.public(job.model)} is no longer offered by this "
                                         "server")
                requests.append(request_of(job.spec, entry))
            except TunesmithError as err:  # e.g. an upload pruned while the job waited
                self._end(job, one_line(err))
                requests.append(None)
            except Exception as err:  # a request an older version stored that this one cannot read
                self._end(job, f"the stored request cannot be read ({type(err).__name__}): submit it again")
                requests.append(None)
        pairs = [(j, r) for j, r in zip(jobs, requests) if r is not None]
        if not pairs:
            return
        jobs = [j for j, _ in pairs]
        try:
            model = self._model(entry)
            self._use_lora(model, entry, jobs[0].spec)  # one set a batch (spec.batch_key)
        except Exception as err:  # no job's fault (or the set they share): all fail alike
            for job in jobs:
                self._fail(job, err)
            return
        try:
            clips = self._generate(model, jobs, [r for _, r in pairs])
        except Cancelled:
            for job in jobs:
                self._settle_cancelled(job)
            return
        except Exception as err:
            if len(jobs) > 1:  # one job's value (or a bug it meets) may fail the batch: each alone says whose
                log.info("a batch of %d jobs failed (%s): running each alone", len(jobs), type(err).__name__)
                for job, request in pairs:
                    self._run_alone(entry, job, request)
                return
            self._fail(jobs[0], err)
            return
        self._save(jobs, [r for _, r in pairs], clips, model.sample_rate)

    def _run_alone(self, entry, job: Job, request):
        try:
            clips = self._generate(self._model(entry), [job], [request])
        except Cancelled:
            self._settle_cancelled(job)
            return
        except Exception as err:
            self._fail(job, err)
            return
        self._save([job], [request], clips, self.models[entry.name].sample_rate)

    def _fail(self, job: Job, err: Exception):
        """A job whose generation raised: the user's mistake in its own words, a bug of ours as one line
        (the log has the rest)."""
        if isinstance(err, TunesmithError):
            return self._end(job, one_line(err))
        log.error("generation failed:\n%s", "".join(traceback.format_exception(err)))
        self._end(job, f"internal error: {type(err).__name__}: {one_line(err)}")

    def _generate(self, model, jobs: list[Job], requests: list) -> list:
        progress = self._progress_hook([j.id for j in jobs])
        progress(0, 1)  # a cancel that came while the job was being claimed
        self._batches += 1
        log.info("generating %d job(s), %d clip(s), on %s", len(jobs), sum(len(r.rows) for r in requests), model.name)
        return model.generate_request(batch_requests(requests), progress=progress)

    def _settle_cancelled(self, job: Job):
        """A stopped batch: cancelled jobs end so; the others (batch mates, or all on shutdown) queue again."""
        if job.id in self.cancelling:
            self._record(self.store.fail, job.id, "cancelled", "cancelled")
            self.cancelling.discard(job.id)
        else:
            self._record(self.store.requeue, job.id)
        self.progress.pop(job.id, None)

    def _end(self, job: Job, error: str):
        self._record(self.store.fail, job.id, error)
        self.cancelling.discard(job.id)
        self.progress.pop(job.id, None)
        log.info("job %s failed: %s", job.id, error)

    def _save(self, jobs: list[Job], requests: list, clips: list, sample_rate: int):
        start = 0
        for job, request in zip(jobs, requests):
            mine = clips[start : start + len(request.rows)]
            start += len(request.rows)
            try:
                files = [self._write(job, i, clip) for i, clip in enumerate(mine)]
            except NoSpace:  # said without the server's path: clients read it
                self._end(job, "the server's disk is full: cannot write the job's audio")
                continue
            except TunesmithError as err:
                self._end(job, one_line(err))
                continue
            checks = [check_view(c) for c in mine]
            timings = dict(mine[0].timings, batch_jobs=len(jobs), queued_s=job.started_at - job.created_at,
                           run_s=time.time() - job.started_at)
            self._record(self.store.finish, job.id, files, [c.seed for c in mine], timings, checks, sample_rate)
            self.cancelling.discard(job.id)
            self.progress.pop(job.id, None)
            log.info("job %s done", job.id)

    def _write(self, job: Job, index: int, clip) -> str:
        finishing = job.spec.get("finishing")
        if finishing:
            clip = clip.finish(**finishing)
        name = f"{job.id}-{index}.{job.spec['format']}"
        clip.save(Path(self.store.audio) / name, wav_format=job.spec["wav_format"])  # temporary name, renamed
        return name

    def _run_stems(self, job: Job):
        """Split a finished job's clip into stems: one file per stem, in the job's format."""
        from ..stems import load_stem_model, separate

        spec = job.spec
        source = self.store.get(spec["source"])
        if source is None or source.status != "done" or spec["index"] >= len(source.files):
            return self._end(job, f"job {spec['source']} and its audio are gone from the server")
        try:
            name = f"stems:{spec['stems_model']}"
            model = self._cached(name, lambda: load_stem_model(self.settings.stems_models[spec["stems_model"]],
                                                               device=self.settings.device))
            start = time.time()
            stems = separate(Path(self.store.audio) / source.files[spec["index"]], model=model,
                             shifts=spec["shifts"], two_stems=spec["two_stems"],
                             progress=self._progress_hook([job.id]))
        except Cancelled:
            return self._settle_cancelled(job)
        except ModelNotFound as err:  # the server's stems models are chosen where it starts
            return self._end(job, one_line(naming_folder_flag(err, "tunesmith serve --stems-model")))
        except TunesmithError as err:
            return self._end(job, one_line(err))
        except Exception as err:  # a bug of ours: the job fails with one line, the log has the rest
            log.error("separation failed:\n%s", traceback.format_exc())
            return self._end(job, f"internal error: {type(err).__name__}: {one_line(err)}")
        try:
            files = []
            for stem, clip in stems.items():
                name = f"{job.id}-{stem}.{spec['format']}"
                clip.save(Path(self.store.audio) / name, wav_format=spec["wav_format"])  # temporary name, renamed
                files.append(name)
        except NoSpace:
            return self._end(job, "the server's disk is full: cannot write the stems")
        except TunesmithError as err:
            return self._end(job, one_line(err))
        checks = [check_view(c) for c in stems.values()]
        timings = dict(separate=time.time() - start, queued_s=job.started_at - job.created_at,
                       run_s=time.time() - job.started_at)
        first = next(iter(stems.values()))
        self._record(self.store.finish, job.id, files, [source.seeds[spec["index"]]] * len(files), timings, checks,
                     first.sample_rate)
        self.cancelling.discard(job.id)
        self.progress.pop(job.id, None)
        log.info("job %s done (%d stems)", job.id, len(files))

    def _progress_hook(self, ids: list[str]):
        """The progress callback of a run: records (done, total) per job, raises Cancelled on a cancel."""
        def progress(done: int, total: int):
            if self._stop.is_set() or self.cancelling.intersection(ids):
                raise Cancelled()
            for i in ids:
                self.progress[i] = (done, total)

        return progress

    def _cached(self, name: str, load):
        """A model kept in memory (the least recently used dropped beyond `loaded`), loaded when missing."""
        if name in self.models:
            self.models.move_to_end(name)
            return self.models[name]
        while len(self.models) >= max(1, self.settings.loaded):
            dropped, _ = self.models.popitem(last=False)
            log.info("dropping %s from memory", dropped)
            _free_memory()
        log.info("loading %s", name)
        self.models[name] = load()
        return self.models[name]

    def _swaps(self, entry) -> bool:
        """Whether this model swaps adapter sets per job: the server has a --lora-dir and its family swaps them."""
        from ..family import FAMILIES

        return self.settings.lora_dir is not None and "swap_lora" in FAMILIES[entry.family].loading

    def _model(self, entry):
        """The generation model of a registry entry, loaded when needed."""
        from .. import load

        def load_entry():
            adapters = [spec for _, spec in self.settings.lora.get(entry.name, [])]
            options = {"swap_lora": True} if self._swaps(entry) else {}
            if adapters:
                options["lora"] = adapters
            model = load(entry.source, device=self.settings.device, dtype=self.settings.dtype, **options)
            model.name = entry.name
            if self._swaps(entry):  # what a job's adapters are checked against at submit from now on
                self.fittings.record(entry.name, entry.source, model.lora_fitting())
            return model

        return self._cached(entry.name, load_entry)

    def _use_lora(self, model, entry, spec: dict):
        """The batch's adapter set merged into the model (the set it runs already: nothing to do). A job stored
        without one (an older version's) runs the model's --lora set."""
        if not self._swaps(entry):
            return
        from .loras import adapters_of

        if "lora" in spec:
            wanted = adapters_of(spec["lora"], self.settings.lora_dir)
        else:
            wanted = [s for _, s in self.settings.lora.get(entry.name, [])]
        if model.use_lora(wanted):
            log.info("%s runs with LoRA %s", entry.name, ", ".join(str(s) for s in wanted) or "none")


def check_view(clip) -> dict:
    """A clip's output check as the job store keeps it: advice says what to do about a failed one."""
    return dict(ok=clip.check.ok, summary=clip.check.summary(), advice=clip.check.advice(), peak=clip.check.peak,
                rms_dbfs=clip.check.rms_dbfs)


def _free_memory():
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # freeing is best effort
        pass
