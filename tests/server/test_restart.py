"""Jobs survive a kill -9: queued ones run, the running one reruns with its seed, finished ones download."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from .conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


class ServeProcess:
    """`tunesmith serve` in a child process on a free port (--port 0: it prints the one it got)."""

    def __init__(self, folder, data, *options: str):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen([sys.executable, "-m", "tunesmith", "serve", "-m", str(folder), "--port", "0",
                                      "--data", str(data), "--device", "cpu", "--dtype", "float32", *options],
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.lines, self.port = [], None
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(lambda: self.port or self.proc.poll() is not None, "the server to listen", limit_s=300)
        assert self.port, "".join(self.lines)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            found = re.search(r"serving http://127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))

    def job(self, job_id):
        return self.client.get(f"/api/jobs/{job_id}").json()

    def kill(self, sig=signal.SIGKILL):
        self.client.close()
        self.proc.send_signal(sig)
        return self.proc.wait(30)


@pytest.mark.slow
def test_kill_9_mid_job_then_restart(mono_ckpt, mono_model, tmp_path):
    data = tmp_path / "data"
    first = ServeProcess(mono_ckpt[0], data)
    try:
        specs = [("calm piano", 0.5, 3), ("slow ambient pads", 15, 10), ("deep house", 15, 20), ("rock drums", 1, 30)]
        ids = [first.client.post("/api/jobs", json={"prompt": p, "duration": d, "seed": s}).json()["id"]
               for p, d, s in specs]
        wait_for(lambda: first.job(ids[0])["status"] == "done", "the first job")
        wait_for(lambda: first.job(ids[1])["done"] > 0, "the long jobs to be under way")
    finally:
        assert first.kill() == -signal.SIGKILL
    second = ServeProcess(mono_ckpt[0], data)
    try:
        jobs = [wait_for(lambda i=i: (j := second.job(i))["status"] in ("done", "error") and j, f"job {i}")
                for i in ids]
        assert [j["status"] for j in jobs] == ["done"] * 4
        assert [j["runs"] for j in jobs] == [1, 2, 2, 1]  # the two cut short ran again, nothing else did
        names = sorted(p.name for p in (data / "audio").iterdir())
        assert names == sorted(f"{i}-0.wav" for i in ids)  # each file once, no partial files left
        for (prompt, duration, seed), job in zip(specs, jobs):
            res = second.client.get(f"/api/jobs/{job['id']}/audio")
            audio, rate = sf.read(io.BytesIO(res.content), dtype="float32", always_2d=True)
            clean, = mono_model.generate(prompt, duration=duration, seed=seed)
            assert audio.T.shape == clean.audio.shape
            np.testing.assert_allclose(audio.T, clean.audio, atol=1e-4)
    finally:
        assert second.kill(signal.SIGINT) == 0  # Ctrl-C: a clean stop
    assert "stopped" in second.lines[-1]
