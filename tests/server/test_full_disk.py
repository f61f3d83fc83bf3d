"""A full disk: a write answers 507 with one line naming what could not be stored (never a server path),
reads go on, the worker lives through it, and all works again once there is space."""

from __future__ import annotations

import io
import sqlite3

import httpx
import numpy as np
import soundfile as sf

from ..full_disk import fill, full_partial, needs_dev_full, small_disk
from .conftest import wait_for
from .test_jobs import done

JOB = {"prompt": "jazz", "duration": 0.5}
GENERATE = {"prompt": "jazz", "seconds": 0.5}
FULL = "the server's disk is full: "


class FullDisk:
    """The store's SQLite connection on a full disk: statements that write fail as SQLite fails them."""

    WRITES = ("INSERT", "UPDATE", "DELETE", "BEGIN IMMEDIATE")

    def __init__(self, db, refuses=WRITES):
        self.db, self.refuses, self.full, self.refused = db, refuses, True, 0

    def execute(self, sql, args=()):
        if self.full and sql.lstrip().upper().startswith(self.refuses):
            self.refused += 1
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, args)

    def __getattr__(self, name):
        return getattr(self.db, name)


def make_full(store, monkeypatch, refuses=FullDisk.WRITES) -> FullDisk:
    disk = FullDisk(store._db, refuses)
    monkeypatch.setattr(store, "_db", disk)
    return disk


def wav_bytes() -> bytes:
    out = io.BytesIO()
    sf.write(out, np.zeros(16000, np.float32), 32000, format="WAV")
    return out.getvalue()


def test_writes_answer_507_and_reads_go_on(client_for, monkeypatch):
    client, app = client_for()
    first = done(client, client.post("/api/jobs", json=JOB).json()["id"])
    disk = make_full(app.state.store, monkeypatch)
    for path, body in (("/api/jobs", JOB), ("/api/generate", GENERATE)):
        res = client.post(path, json=body)
        assert res.status_code == 507 and res.json() == {"detail": FULL + "cannot store the job"}, path
    res = client.post("/api/uploads", files={"file": ("a.wav", wav_bytes(), "audio/wav")})
    assert res.status_code == 507 and res.json() == {"detail": FULL + "cannot store the upload"}
    assert list(app.state.store.uploads.iterdir()) == []  # the unrecorded upload's file is not left behind
    for path in ("/api/health", "/api/jobs", f"/api/jobs/{first['id']}", f"/api/status/{first['id']}",
                 f"/api/audio/{first['id']}", f"/api/jobs/{first['id']}/audio"):
        assert client.get(path).status_code == 200, path  # a download's bookkeeping write is let go
    refused = disk.refused
    disk.full = False
    res = client.post("/api/jobs", json=JOB)
    assert refused >= 4 and res.status_code == 202 and done(client, res.json()["id"])["status"] == "done"


@needs_dev_full
def test_a_job_whose_audio_cannot_be_written_ends_in_one_line(client_for):
    client, app = client_for(start_worker=False)
    job_id = client.post("/api/jobs", json=JOB).json()["id"]
    full_partial(app.state.store.audio / f"{job_id}-0.wav")  # its audio lands on /dev/full: ENOSPC
    app.state.worker.start()
    job = done(client, job_id)
    assert job["status"] == "error" and job["error"] == FULL + "cannot write the job's audio"


def test_the_worker_lives_through_a_full_store_and_settles_later(client_for, monkeypatch):
    client, app = client_for(start_worker=False)
    job_id = client.post("/api/jobs", json=JOB).json()["id"]
    disk = make_full(app.state.store, monkeypatch, refuses=("UPDATE JOBS SET STATUS='DONE'",))
    app.state.worker.start()
    wait_for(lambda: disk.refused >= 2, "the worker to try twice to mark the job done", limit_s=30)
    assert app.state.worker.alive and client.get(f"/api/jobs/{job_id}").json()["status"] == "running"
    disk.full = False
    assert done(client, job_id)["status"] == "done"
    assert client.get(f"/api/jobs/{job_id}/audio").status_code == 200
    assert done(client, client.post("/api/jobs", json=JOB).json()["id"])["status"] == "done"


def test_a_real_full_disk(start_server, tmp_path):
    with small_disk(tmp_path / "disk", "8m") as disk:
        server = start_server(data=disk / "data")
        with httpx.Client(base_url=server.url, timeout=60) as client:
            first = done(client, client.post("/api/jobs", json=JOB).json()["id"])
            filler = fill(disk)
            for path, body in (("/api/jobs", JOB), ("/api/generate", GENERATE)):
                res = client.post(path, json=body)
                assert res.status_code == 507 and res.json() == {"detail": FULL + "cannot store the job"}, path
            assert client.get("/api/jobs").status_code == 200
            assert client.get("/api/health").json()["store"] == "ok"
            assert client.get(f"/api/audio/{first['id']}").status_code == 200
            res = client.get(f"/api/audio/{first['id']}", params={"fmt": "flac"})
            assert res.status_code == 507 and res.json() == {"detail": FULL + "cannot convert the audio to flac"}
            filler.unlink()
            res = client.post("/api/jobs", json=JOB)
            assert res.status_code == 202 and done(client, res.json()["id"])["status"] == "done"
        server.stop()  # before its disk goes
