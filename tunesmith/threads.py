"""CPU threads that hold up on a busy machine (no torch here: __init__ runs it before torch loads).

Three parts: OpenMP's waiting, set before libgomp loads; the cores this process may use (affinity and
cgroup quota); and, per call, fewer threads while other processes keep cores busy.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

# libgomp's default spins ~300000 times (milliseconds here) at every barrier before sleeping: on a busy
# core that spinning burns the time slice the thread it waits for needs. Measured (BENCHMARKS.md,
# "On a busy machine"): this count sleeps soon enough under load and costs nothing idle.
SPINCOUNT = "10000"
# Either one set by the user means their choice stands (GOMP_SPINCOUNT overrides the wait policy).
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def set_openmp_defaults(environ=None) -> bool:
    """Short spinning for libgomp's waits (in `environ`, default os.environ) unless the user set
    OMP_WAIT_POLICY or GOMP_SPINCOUNT; True if set. libgomp reads these when it loads (import torch),
    so a later call changes nothing."""
    environ = os.environ if environ is None else environ
    if any(name in environ for name in WAIT_VARIABLES):
        return False
    environ["GOMP_SPINCOUNT"] = SPINCOUNT
    return True


def available_cores(root: Path = Path("/"), affinity: set[int] | None = None) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota (rounded up: 1.5
    cores of quota still run two threads' worth of work)."""
    if affinity is None:
        affinity = _affinity()
    cores = len(affinity) if affinity else os.cpu_count() or 1
    quota = cpu_quota(root)
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def _affinity() -> set[int]:
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):  # not Linux
        return set()


def cpu_quota(root: Path = Path("/")) -> float | None:
    """Cores' worth of CPU time the cgroups above this process allow (the smallest quota on the way up,
    v2 cpu.max or v1 cpu.cfs_quota_us), or None where there is none."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one hierarchy
            base = root / "sys/fs/cgroup"
        elif "cpu" in controllers.split(","):
            base = root / "sys/fs/cgroup" / controllers
            if not base.is_dir():
                base = root / "sys/fs/cgroup/cpu"
        else:
            continue
        folder = base / path.strip("/")
        for f in [folder, *folder.parents]:
            quota = _quota_in(f)
            if quota is not None:
                quotas.append(quota)
            if f == base:
                break
    return min(quotas) if quotas else None


def _quota_in(folder: Path) -> float | None:
    try:
        if (folder / "cpu.max").is_file():  # "max 100000" or "<quota> <period>"
            quota, period = (folder / "cpu.max").read_text().split()
            return None if quota == "max" else int(quota) / int(period)
        quota = int((folder / "cpu.cfs_quota_us").read_text())  # -1: none
        return quota / int((folder / "cpu.cfs_period_us").read_text()) if quota > 0 else None
    except (OSError, ValueError, ZeroDivisionError):
        return None


def busy_elsewhere(cpus: set[int] | None = None, seconds: float = 0.04, stat: Path = Path("/proc/stat")
                   ) -> float | None:
    """Cores' worth of CPU time other processes used on `cpus` (default: this process's) over the next
    `seconds`: the busy time /proc/stat counts less this process's own. None where unreadable."""
    cpus = _affinity() if cpus is None else cpus
    before, own, start = _cpu_ticks(stat, cpus), time.process_time(), time.monotonic()
    time.sleep(seconds)
    after, own, wall = _cpu_ticks(stat, cpus), time.process_time() - own, time.monotonic() - start
    if before is None or after is None:
        return None
    busy = sum((b1 - b0) / (t1 - t0) for (b0, t0), (b1, t1) in zip(before, after) if t1 > t0)
    return max(0.0, busy - own / wall)


def _cpu_ticks(stat: Path, cpus: set[int]) -> list[tuple[int, int]] | None:
    """(busy, total) ticks of each CPU in `cpus`, from /proc/stat's cpuN lines."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    ticks = []
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and (not cpus or int(name[3:]) in cpus):
            values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
            total = sum(values)
            ticks.append((total - values[3] - values[4], total))
    return ticks or None


def threads_for_load(threads: int, cores: int, others: float | None) -> int:
    """Threads for one call: `threads`, no more than the cores, less one for each core other processes
    keep busy (over half of it), never below 1. others None (unknown): no change."""
    threads = min(threads, cores)
    if others is not None:
        threads = min(threads, cores - math.floor(others + 0.5))
    return max(1, threads)
