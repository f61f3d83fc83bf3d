"""A job's audio damaged on the server's disk after it was written (truncated, overwritten) is answered 410,
never served as if whole; stems of a job whose audio is gone are refused at submit."""

from __future__ import annotations

import os

import pytest

from .test_jobs import done


@pytest.fixture
def finished(client_for):
    client, app = client_for()
    job = done(client, client.post("/api/jobs", json={"prompt": "rain", "duration": 0.3, "seed": 1}).json()["id"])
    assert job["status"] == "done", job
    return client, app, job["id"], app.state.store.audio / app.state.store.get(job["id"]).files[0]


def gets(client, job_id):
    return [client.get(f"/api/jobs/{job_id}/audio"), client.get(f"/api/audio/{job_id}")]


def test_a_truncated_file_is_not_served(finished):
    client, _, job_id, path = finished
    assert [r.status_code for r in gets(client, job_id)] == [200, 200]
    path.write_bytes(path.read_bytes()[:100])
    for res in gets(client, job_id):
        assert res.status_code == 410 and res.json()["detail"] == f"the audio of job {job_id} is damaged on the " \
                                                                    "server's disk"


def test_a_file_overwritten_at_its_size_is_not_served(finished):
    client, _, job_id, path = finished
    data = bytearray(path.read_bytes())
    data[-200:] = bytes(200)
    path.write_bytes(bytes(data))
    assert [r.status_code for r in gets(client, job_id)] == [410, 410]


def test_a_file_touched_or_copied_back_whole_is_served(finished):
    client, _, job_id, path = finished
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)  # a backup restored: a new mtime, the same bytes
    os.utime(path, ns=(1, 1))
    assert [r.status_code for r in gets(client, job_id)] == [200, 200]


def test_stems_of_a_job_whose_audio_is_gone_are_refused_at_submit(finished):
    client, app, job_id, path = finished
    path.unlink()
    res = client.post(f"/api/jobs/{job_id}/stems", json={})
    assert res.status_code == 410 and res.json()["detail"] == f"the audio of job {job_id} is gone from the " \
                                                               "server's disk"
    path.write_bytes(b"RIFF")
    assert client.post(f"/api/jobs/{job_id}/stems", json={}).status_code == 410
    assert len(client.get("/api/jobs").json()) == 1  # no stems job was stored
