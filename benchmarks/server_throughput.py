"""Server throughput: 8 clients at once, each submitting jobs and polling as mlx-audiogen's device does;
batched (the default) against one job at a time (--max-batch 1). Reports the aggregate real-time factor
(seconds of audio made per second of wall time) and the mean wait of a job from submit to download.

    python -m benchmarks.server_throughput                     # the tiny test checkpoint (engine overhead only)
    python -m benchmarks.server_throughput --size small        # real small architecture, random weights

The server runs in this process (uvicorn on a free port of 127.0.0.1), through real HTTP.
"""

from __future__ import annotations

import argparse
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=SIZES)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2, help="jobs each client submits, one after another")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of audio per job")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    folder = checkpoint_for(args.size)
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
