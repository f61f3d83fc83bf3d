"""Server throughput: 8 clients at once, each submitting jobs and polling as mlx-audiogen's device does;
batched (the default) against one job at a time (--max-batch 1). Reports the aggregate real-time factor
(seconds of audio made per second of wall time) and the mean wait of a job from submit to download.

    python -m benchmarks.server_throughput                     # the tiny test checkpoint (engine overhead only)
    python -m benchmarks.server_throughput --size small        # real small architecture, random weights
    python -m benchmarks.server_throughput --ray --store postgresql://USER@127.0.0.1:PORT/DB

The server runs in this process (uvicorn on a free port of 127.0.0.1), through real HTTP. With --ray,
`tunesmith serve --ray local` runs with 1 and then 2 generation replicas (jobs in the PostgreSQL at
--store) and the report gives jobs per minute for each beside the one-machine server, and the overhead per
job: what each adds to a short job beyond generating it.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .common import SIZES, checkpoint_for, hardware, report

PROMPTS = ("calm lofi piano with vinyl crackle", "deep house with a hypnotic bassline", "bossa nova guitar",
           "fast rock drums", "ambient pads", "slow jazz", "synth", "hypnotic deep house")


class Server:
    def __init__(self, folder: Path, data: Path, max_batch: int, device: str):
        import uvicorn

        from tunesmith.server.app import create_app
        from tunesmith.server.run import bind
        from tunesmith.server.settings import ServerSettings
        from tunesmith.server.worker import WorkerSettings

        settings = ServerSettings(models=[str(folder)], data=data, max_queue=1000,
                                  worker=WorkerSettings(device=device, max_batch=max_batch))
        self.app = create_app(settings)
        sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs=dict(sockets=[sock]), daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def stop(self):
        self.server.should_exit = True
        self.thread.join()


class RayServer:
    """`tunesmith serve --ray local` in a child process (Ray's head and replicas stop with it)."""

    def __init__(self, folder: Path, data: Path, store: str, replicas: int, max_batch: int, device: str):
        root = Path(__file__).resolve().parents[1]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen([sys.executable, "-m", "tunesmith", "serve", "-m", str(folder), "--port", "0",
                                      "--data", str(data), "--device", device, "--max-batch", str(max_batch),
                                      "--max-queue", "1000", "--store", store, "--ray", "local",
                                      "--replicas", str(replicas)], stderr=subprocess.PIPE, text=True, env=env)
        for line in self.proc.stderr:
            found = re.search(r"serving (http://127\.0\.0\.1:\d+)", line)
            if found:
                self.url = found.group(1)
                break
        else:
            raise RuntimeError(f"tunesmith serve --ray did not start (exit {self.proc.wait()})")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()  # keep it drained

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(300)


def client(url: str, n: int, jobs: int, seconds: float) -> list[float]:
    """Submit, poll every 0.1 s, download; `jobs` times in a row -> each job's wait (s)."""
    import httpx

    waits = []
    with httpx.Client(base_url=url, timeout=600) as http:
        for j in range(jobs):
            start = time.perf_counter()
            job_id = http.post("/api/generate", json={"prompt": PROMPTS[(n + j) % len(PROMPTS)], "seconds": seconds,
                                                      "seed": n * 100 + j}).json()["id"]
            while (status := http.get(f"/api/status/{job_id}").json()["status"]) not in ("done", "error"):
                time.sleep(0.1)
            if status != "done":
                raise RuntimeError(http.get(f"/api/status/{job_id}").json()["error"])
            assert http.get(f"/api/audio/{job_id}").content[:4] == b"RIFF"
            waits.append(time.perf_counter() - start)
    return waits


def overheads(url: str, jobs: int) -> list[float]:
    """One client, 1 s jobs one after another -> each job's wait (submit to downloaded) minus the time its
    worker spent on it (timings.run_s): what the server adds, whatever the machine's load does to generation."""
    import httpx

    spent = []
    with httpx.Client(base_url=url, timeout=600) as http:
        for j in range(jobs):
            start = time.perf_counter()
            job_id = http.post("/api/jobs", json={"prompt": PROMPTS[j % len(PROMPTS)], "duration": 1.0,
                                                  "seed": j}).json()["id"]
            while (job := http.get(f"/api/jobs/{job_id}").json())["status"] not in ("done", "error"):
                time.sleep(0.01)
            assert http.get(f"/api/jobs/{job_id}/audio").content[:4] == b"RIFF"
            spent.append(time.perf_counter() - start - job["timings"]["run_s"])
    return spent


def run(folder: Path, max_batch: int, clients: int, jobs: int, seconds: float, device: str) -> dict:
    import httpx

    with tempfile.TemporaryDirectory() as data:
        server = Server(folder, Path(data), max_batch, device)
        try:
            client(server.url, 0, 1, seconds)  # load the model: not timed
            httpx.get(f"{server.url}/api/health")
            calls = server.app.state.worker._batches
            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                waits = [w for ws in pool.map(lambda n: client(server.url, n, jobs, seconds), range(clients))
                         for w in ws]
            wall = time.perf_counter() - start
            calls = server.app.state.worker._batches - calls
        finally:
            server.stop()
    audio = clients * jobs * seconds
    return dict(wall=wall, rtf=audio / wall, wait=sum(waits) / len(waits), calls=calls, audio=audio)


def run_ray(folder: Path, store: str, replicas: int, clients: int, jobs: int, seconds: float, device: str) -> dict:
    with tempfile.TemporaryDirectory() as data:
        server = RayServer(folder, Path(data), store, replicas, 16, device)
        try:
            for n in range(replicas * 2):  # each replica loads the model: not timed
                client(server.url, n, 1, seconds)
            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                waits = [w for ws in pool.map(lambda n: client(server.url, n, jobs, seconds), range(clients))
                         for w in ws]
            wall = time.perf_counter() - start
            single = overheads(server.url, jobs * 4) if replicas == 1 else []
        finally:
            server.stop()
    return dict(wall=wall, per_minute=clients * jobs * 60 / wall, wait=sum(waits) / len(waits),
                single=statistics.median(single) if single else None)


def main_ray(args, folder: Path):
    if not args.store:
        raise SystemExit("--ray needs --store postgresql://USER@HOST:PORT/DB (or TUNESMITH_STORE)")
    with tempfile.TemporaryDirectory() as data:  # the one-machine server's one-client wait, for the overhead
        server = Server(folder, Path(data), 16, args.device)
        try:
            client(server.url, 0, 1, 1.0)
            alone = overheads(server.url, args.jobs * 4)
        finally:
            server.stop()
    local = run(folder, 16, args.clients, args.jobs, args.seconds, args.device)
    rows = [f"| one machine (SQLite, one worker) | {args.clients * args.jobs * 60 / local['wall']:.1f} | "
            f"{local['wait']:.2f} |"]
    print(rows[-1], flush=True)
    overhead, local_overhead = None, statistics.median(alone)
    for replicas in (1, 2):
        r = run_ray(folder, args.store, replicas, args.clients, args.jobs, args.seconds, args.device)
        rows.append(f"| Ray Serve, {replicas} generation replica{'s' if replicas > 1 else ''} | "
                    f"{r['per_minute']:.1f} | {r['wait']:.2f} |")
        print(rows[-1], flush=True)
        if r["single"] is not None:
            overhead = r["single"]
    model = f"musicgen-{args.size} architecture, random weights" if args.size != "tiny" else "the tiny test checkpoint"
    table = "\n".join([f"### Cluster throughput: {args.clients} clients x {args.jobs} jobs of {args.seconds:g} s "
                       f"({model})", "", f"{hardware()}; Ray's head, its replicas and PostgreSQL on the same machine.",
                       f"Command: `python -m benchmarks.server_throughput --ray --size {args.size} --clients "
                       f"{args.clients} --jobs {args.jobs} --seconds {args.seconds:g} --store URL`.", "",
                       "| server | jobs per minute | mean wait (s) |", "| --- | ---: | ---: |", *rows, "",
                       "Overhead per job (one client polling every 10 ms, 1 s jobs one after another; the median "
                       "of submit-to-downloaded minus the job's own run time): one machine "
                       f"{local_overhead * 1000:.0f} ms, Ray Serve with one replica {overhead * 1000:.0f} ms "
                       f"({(overhead - local_overhead) * 1000:+.0f} ms).", ""])
    report(table, args.markdown)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=SIZES)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2, help="jobs each client submits, one after another")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of audio per job")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--markdown")
    parser.add_argument("--ray", action="store_true", help="also Ray Serve with 1 and 2 generation replicas")
    parser.add_argument("--store", default=os.environ.get("TUNESMITH_STORE"), help="with --ray: postgresql://...")
    args = parser.parse_args(argv)
    folder = checkpoint_for(args.size)
    if args.ray:
        return main_ray(args, folder)
    rows = []
    for label, max_batch in (("one at a time", 1), ("batched", 16)):
        r = run(folder, max_batch, args.clients, args.jobs, args.seconds, args.device)
        rows.append(f"| {label} | {r['calls']} | {r['audio']:g} | {r['wall']:.1f} | {r['rtf']:.2f} | {r['wait']:.1f} |")
        print(rows[-1], flush=True)
    model = f"musicgen-{args.size} architecture, random weights" if args.size != "tiny" else "the tiny test checkpoint"
    table = "\n".join([f"### Server throughput: {args.clients} clients x {args.jobs} jobs of {args.seconds:g} s "
                       f"({model})", "", f"{hardware()}.",
                       f"Command: `python -m benchmarks.server_throughput --size {args.size} --clients {args.clients} "
                       f"--jobs {args.jobs} --seconds {args.seconds:g}`.", "",
                       "| worker | generate calls | audio (s) | wall (s) | real-time factor | mean wait (s) |",
                       "| --- | ---: | ---: | ---: | ---: | ---: |", *rows, ""])
    report(table, args.markdown)


if __name__ == "__main__":
    main()
