"""tunesmith's own routes: jobs with variations, uploads, events, cancel, delete, idempotency, batching."""

from __future__ import annotations

import io
import json

import numpy as np
import soundfile as sf

from .conftest import wait_for


def done(client, job_id):
    return wait_for(lambda: (j := client.get(f"/api/jobs/{job_id}").json())["status"] in ("done", "error",
                                                                                            "cancelled") and j,
                    f"job {job_id}")


def audio_of(client, job_id, index=0, fmt=None):
    res = client.get(f"/api/jobs/{job_id}/audio", params={"index": index, **({"fmt": fmt} if fmt else {})})
    assert res.status_code == 200, res.text
    data, rate = sf.read(io.BytesIO(res.content), dtype="float32", always_2d=True)
    return data.T, rate


def test_variations_have_their_seeds_files_and_checks(client_for, mono_model):
    client, _ = client_for()
    res = client.post("/api/jobs", json={"prompt": "deep house", "duration": 0.5, "seed": 7, "variations": 2,
                                         "format": "flac", "temperature": 1, "cfg": 3})
    assert res.status_code == 202
    job = done(client, res.json()["id"])
    assert job["status"] == "done" and job["seeds"] == [7, 8] and len(job["files"]) == 2
    assert all(f["check"]["ok"] in (True, False) for f in job["files"]) and job["timings"]["lm"] > 0
    for i, seed in enumerate((7, 8)):
        audio, rate = audio_of(client, job["id"], i)
        alone, = mono_model.generate("deep house", duration=0.5, seed=seed)
        assert rate == 32000 and audio.shape == alone.audio.shape
        np.testing.assert_allclose(audio, alone.audio, atol=1e-4)  # 16-bit FLAC of the same clip
    res = client.get(f"/api/jobs/{job['id']}/audio", params={"index": 0})
    assert res.headers["content-type"] == "audio/flac" and 'deep-house-7.flac"' in res.headers["content-disposition"]
    assert client.get(f"/api/jobs/{job['id']}/audio", params={"index": 2}).status_code == 404
    listed = client.get("/api/jobs").json()
    assert listed[0]["id"] == job["id"]


def test_finishing_and_schedule(client_for):
    client, _ = client_for()
    res = client.post("/api/jobs", json={"prompt": [[0, "calm piano"], [0.5, "fast drums"]], "duration": 1,
                                         "seed": 1, "fade_in": 0.2, "fade_out": 0.2, "loudness": -20})
    job = done(client, res.json()["id"])
    assert job["status"] == "done", job
    audio, _ = audio_of(client, job["id"])
    assert np.abs(audio[:, :100]).max() < np.abs(audio).max() / 10  # faded in
    assert job["prompt"] == "0s: calm piano | 0.5s: fast drums"


def test_idempotency_key_returns_the_same_job(client_for):
    client, app = client_for(start_worker=False)
    body = {"prompt": "ambient pads", "duration": 0.3}
    first = client.post("/api/jobs", json=body, headers={"Idempotency-Key": "abc-1"})
    again = client.post("/api/jobs", json=body, headers={"Idempotency-Key": "abc-1"})
    other = client.post("/api/jobs", json=body, headers={"Idempotency-Key": "abc-2"})
    assert first.status_code == 202 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"] != other.json()["id"]
    assert app.state.store.count() == 2


def test_events_stream_progress_then_done(client_for):
    client, _ = client_for()
    job_id = client.post("/api/jobs", json={"prompt": "slow jazz", "duration": 2, "seed": 3}).json()["id"]
    events = []
    with client.stream("GET", f"/api/jobs/{job_id}/events") as res:
        assert res.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in res.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
    kinds = [e for e, _ in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) <= {"progress"} and "progress" in kinds
    fractions = [d["progress"] for e, d in events if e == "progress"]
    assert fractions == sorted(fractions) and all(0 <= f <= 1 for f in fractions)
    assert events[-1][1]["status"] == "done" and events[-1][1]["files"]


def test_cancel_queued_never_runs_and_running_stops(client_for):
    client, app = client_for(start_worker=False)
    long_id = client.post("/api/jobs", json={"prompt": "slow ambient", "duration": 120, "seed": 1}).json()["id"]
    queued_id = client.post("/api/jobs", json={"prompt": "rock", "duration": 120, "seed": 2}).json()["id"]
    res = client.post(f"/api/jobs/{queued_id}/cancel")
    assert res.status_code == 200 and res.json()["status"] == "cancelled"
    app.state.worker.start()
    wait_for(lambda: app.state.worker.progress.get(long_id, (0, 1))[0] > 0, "the long job to start")
    assert client.post(f"/api/jobs/{long_id}/cancel").status_code == 200
    job = done(client, long_id)
    assert job["status"] == "cancelled" and job["error"] == "cancelled"
    assert app.state.store.get(queued_id).runs == 0 and app.state.store.get(long_id).runs == 1
    res = client.post(f"/api/jobs/{long_id}/cancel")
    assert res.status_code == 409 and "finished" in res.json()["detail"]


def test_delete_removes_the_job_and_its_files(client_for):
    client, app = client_for()
    job = done(client, client.post("/api/jobs", json={"prompt": "synth", "duration": 0.3, "variations": 2}).json()["id"])
    files = [app.state.store.audio / name for name in app.state.store.get(job["id"]).files]
    assert all(f.is_file() for f in files)
    assert client.delete(f"/api/jobs/{job['id']}").json() == {"id": job["id"], "deleted": True}
    assert not any(f.exists() for f in files)
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404


def test_upload_then_continue_it(client_for, mono_model):
    client, _ = client_for()
    prompt_clip, = mono_model.generate("calm piano", duration=0.4, seed=5)
    buffer = io.BytesIO()
    sf.write(buffer, prompt_clip.audio.T, 32000, format="WAV", subtype="FLOAT")
    res = client.post("/api/uploads", files={"file": ("intro.wav", buffer.getvalue(), "audio/wav")})
    assert res.status_code == 201, res.text
    upload = res.json()
    assert upload["seconds"] == 0.4 and upload["sample_rate"] == 32000 and upload["channels"] == 1
    job = done(client, client.post("/api/jobs", json={"prompt": "calm piano", "duration": 1, "seed": 9,
                                                      "continuation": upload["id"], "format": "wav",
                                                      "wav_format": "float"}).json()["id"])
    assert job["status"] == "done", job
    audio, _ = audio_of(client, job["id"])
    expected, = mono_model.generate("calm piano", duration=1, seed=9, audio_prompt=prompt_clip)
    assert audio.shape == (1, 32000)
    np.testing.assert_allclose(audio, expected.audio, atol=1e-5)


def test_compatible_jobs_share_one_batch_and_each_equals_its_solo_run(client_for, mono_model):
    client, app = client_for(start_worker=False)
    ids = [client.post("/api/jobs", json={"prompt": p, "duration": 0.6, "seed": s, "variations": v}).json()["id"]
           for p, s, v in (("deep house with a hypnotic bassline", 11, 1), ("bossa nova guitar", 40, 2))]
    odd = client.post("/api/jobs", json={"prompt": "jazz", "duration": 0.4, "seed": 1}).json()["id"]
    worker = app.state.worker
    worker.start()
    jobs = [done(client, i) for i in ids + [odd]]
    assert all(j["status"] == "done" for j in jobs)
    assert worker._batches == 2  # the two 0.6 s jobs together, the 0.4 s one alone
    assert [j["timings"]["batch_jobs"] for j in jobs] == [2, 2, 1]
    for job, prompt in zip(jobs[:2], ("deep house with a hypnotic bassline", "bossa nova guitar")):
        for i, seed in enumerate(job["seeds"]):
            alone, = mono_model.generate(prompt, duration=0.6, seed=seed)
            audio, _ = audio_of(client, job["id"], i)
            np.testing.assert_allclose(audio, alone.audio, atol=1e-4)
    assert worker.progress == {} and worker.cancelling == set()  # nothing of finished jobs stays in memory


def test_a_failed_check_says_what_to_do_in_the_job(client_for, monkeypatch):
    from ..test_cli_first_hour import _dc_offset

    _dc_offset(monkeypatch)  # the worker runs in this process: every clip fails with a DC offset of 0.12
    client, _ = client_for()
    res = client.post("/api/jobs", json={"prompt": "deep house", "duration": 0.3, "seed": 7})
    job = done(client, res.json()["id"])
    assert job["status"] == "done", job
    check = job["files"][0]["check"]
    assert (check["ok"], check["summary"], check["advice"]) == (False, "DC offset 0.12",
                                                                 "the file was kept; try another seed")
