"""CPU threads on a busy machine: the cores counted, OpenMP's waiting set only where the user did not,
the per-call back-off's decisions, and generation unchanged by it."""

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tunesmith import generation, threads
from tunesmith.threads import available_cores, cpu_quota, set_openmp_defaults, threads_for_load


def _cgroup(root, membership: str, files: dict[str, str]):
    """A fake / with proc/self/cgroup and cgroup files (paths under sys/fs/cgroup)."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(membership)
    for path, text in files.items():
        f = root / "sys/fs/cgroup" / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return root


def test_cores_are_the_affinity_without_a_quota(tmp_path):
    root = _cgroup(tmp_path, "0::/user.slice/app\n", {"user.slice/app/cpu.max": "max 100000\n"})
    assert cpu_quota(root) is None
    assert available_cores(root, affinity={0, 1, 2, 3}) == 4
    assert available_cores(tmp_path / "nowhere", affinity={2, 5}) == 2  # no cgroup files at all


def test_cgroup_v2_quota_caps_the_cores_rounded_up(tmp_path):
    root = _cgroup(tmp_path, "0::/user.slice/app\n", {"user.slice/app/cpu.max": "150000 100000\n"})
    assert cpu_quota(root) == 1.5
    assert available_cores(root, affinity=set(range(8))) == 2
    assert available_cores(root, affinity={0}) == 1  # the affinity is the smaller


def test_cgroup_v2_smallest_quota_on_the_way_up(tmp_path):
    root = _cgroup(tmp_path, "0::/a/b\n", {"a/cpu.max": "50000 100000", "a/b/cpu.max": "max 100000"})
    assert cpu_quota(root) == 0.5
    assert available_cores(root, affinity={0, 1}) == 1  # never below one


def test_cgroup_v1_quota(tmp_path):
    membership = "5:memory:/docker/x\n4:cpu,cpuacct:/docker/x\n"
    root = _cgroup(tmp_path, membership, {"cpu,cpuacct/docker/x/cpu.cfs_quota_us": "300000",
                                          "cpu,cpuacct/docker/x/cpu.cfs_period_us": "100000"})
    assert cpu_quota(root) == 3.0
    assert available_cores(root, affinity=set(range(16))) == 3
    (root / "sys/fs/cgroup/cpu,cpuacct/docker/x/cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(root) is None


def test_openmp_defaults_only_where_the_user_set_none():
    env = {}
    assert set_openmp_defaults(env) and env == {"GOMP_SPINCOUNT": threads.SPINCOUNT}
    for mine in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "5"}):
        env = dict(mine)
        assert not set_openmp_defaults(env) and env == mine


@pytest.mark.parametrize("mine", [None, "777"])
def test_libgomp_reads_them_when_tunesmith_is_imported_first(mine):
    """libgomp prints what it read (OMP_DISPLAY_ENV): tunesmith's spin count, or the user's."""
    env = {k: v for k, v in os.environ.items() if k not in threads.WAIT_VARIABLES}
    env["OMP_DISPLAY_ENV"] = "VERBOSE"
    if mine:
        env["GOMP_SPINCOUNT"] = mine
    out = subprocess.run([sys.executable, "-c", "import tunesmith, torch; torch.ones(4).sum()"], env=env,
                         capture_output=True, text=True, check=True, timeout=120)
    assert f"GOMP_SPINCOUNT = '{mine or threads.SPINCOUNT}'" in out.stderr


@pytest.mark.parametrize("threads_, cores, others, expected", [
    (2, 2, 0.0, 2), (2, 2, 0.4, 2),  # idle, or a little noise: as many as set
    (2, 2, 1.0, 1), (2, 2, 0.6, 1),  # a core kept busy: one fewer
    (2, 2, 2.0, 1), (4, 4, 9.0, 1),  # never below one
    (8, 4, 1.0, 3),  # no more than the cores
    (4, 2, None, 2), (1, 2, None, 1),  # load unknown: the cores cap only
])
def test_back_off_decision(threads_, cores, others, expected):
    assert threads_for_load(threads_, cores, others) == expected


def test_busy_elsewhere_counts_others_on_our_cpus(tmp_path, monkeypatch):
    """Busy ticks over total ticks, per CPU of ours, less this process's own CPU time."""
    stat = tmp_path / "stat"
    head = "cpu  9 9 9 9 9 9 9 9 0 0\n"
    stat.write_text(head + "cpu0 100 0 0 100 0 0 0 0 0 0\ncpu1 0 0 0 200 0 0 0 0 0 0\n"
                    "cpu2 0 0 0 0 0 0 0 0 0 0\n")
    after = head + ("cpu0 140 0 10 150 0 0 0 0 0 0\n"  # 50 of 100 ticks busy
                    "cpu1 50 0 0 230 0 0 20 0 0 0\n"  # 70 of 100 (softirq counts)
                    "cpu2 100 0 0 0 0 0 0 0 0 0\n")  # not ours
    clock = iter([0.0, 1.0, 0.0, 1.0])
    own = iter([5.0, 5.2, 5.0, 5.0])  # 0.2 s of our own CPU in the 1 s window
    fake = SimpleNamespace(sleep=lambda s: stat.write_text(after), monotonic=lambda: next(clock),
                           process_time=lambda: next(own))
    monkeypatch.setattr(threads, "time", fake)
    assert threads.busy_elsewhere({0, 1}, seconds=1.0, stat=stat) == pytest.approx(0.5 + 0.7 - 0.2)
    assert threads.busy_elsewhere({0}, stat=tmp_path / "missing") is None


@pytest.fixture
def two_threads(monkeypatch):
    """torch at 2 threads on 2 available cores, nothing pinned; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(generation, "_pinned", False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(generation, "available_cores", lambda: 2)
    yield monkeypatch
    torch.set_num_threads(before)


def _load(monkeypatch, others):
    monkeypatch.setattr(generation, "busy_elsewhere", lambda: others)


def test_call_threads_backs_off_and_restores(two_threads):
    _load(two_threads, 1.0)
    with generation.call_threads(torch.device("cpu")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    _load(two_threads, 0.0)
    with generation.call_threads(torch.device("cpu")):
        assert torch.get_num_threads() == 2


@pytest.mark.parametrize("how", ["threads=", "OMP_NUM_THREADS", "cuda"])
def test_a_chosen_thread_count_stands(two_threads, how):
    _load(two_threads, 2.0)
    device = torch.device(how if how == "cuda" else "cpu")  # a device name only: nothing runs on it
    if how == "threads=":
        generation.place("cpu", "float32", 2)
    elif how == "OMP_NUM_THREADS":
        two_threads.setenv("OMP_NUM_THREADS", "2")
    with generation.call_threads(device):
        assert torch.get_num_threads() == 2


def test_generate_backs_off_under_load_and_gives_the_same_audio(two_threads, mono_model):
    """The same clip at 1 thread as at 2, up to float rounding (sums split differently)."""
    seen = []

    def note(done, total):
        seen.append(torch.get_num_threads())

    _load(two_threads, 0.0)
    idle = mono_model.generate("warm pads", duration=0.3, seed=7, progress=note)[0]
    assert set(seen) == {2}
    seen.clear()
    _load(two_threads, 1.0)
    busy = mono_model.generate("warm pads", duration=0.3, seed=7, progress=note)[0]
    assert set(seen) == {1} and torch.get_num_threads() == 2
    np.testing.assert_allclose(busy.audio, idle.audio, rtol=0, atol=1e-6)
