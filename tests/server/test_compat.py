"""mlx-audiogen's routes, driven as its clients drive them (m4l/mlx-audiogen.js, the JUCE plugin)."""

from __future__ import annotations

import http.client
import io
import json
import time

import soundfile as sf

from .conftest import wait_for


def node_request(port: int, method: str, path: str, body: dict | None = None):
    """As Node's http.request with req.write(JSON.stringify(body)): no Content-Length, so the body goes
    chunked; Host is 127.0.0.1:PORT."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # the device's own 5 s timeout
    try:
        if body is None:
            conn.request(method, path, headers={"Content-Type": "application/json"})
        else:
            text = json.dumps(body).encode()
            chunks = iter([text[: len(text) // 2], text[len(text) // 2 :]])
            conn.request(method, path, body=chunks, headers={"Content-Type": "application/json"},
                         encode_chunked=True)
        res = conn.getresponse()
        return res.status, dict(res.getheaders()), res.read()
    finally:
        conn.close()


def test_max_for_live_device_flow(start_server):
    server = start_server()
    status, _, body = node_request(server.port, "GET", "/api/health")
    assert status == 200 and b"ok" in body  # what the JUCE plugin checks
    status, _, body = node_request(server.port, "GET", "/api/models")
    models = json.loads(body)
    assert status == 200 and models[0]["model_type"] == "musicgen" and models[0]["is_loaded"] is False
    assert set(models[0]) >= {"name", "model_type", "is_loaded"}
    # The device's body: every field, floats that happen to be whole sent as integers, both families' fields.
    request = dict(model="musicgen", prompt="calm lofi piano", seconds=2, temperature=1, top_k=250, guidance_coef=3,
                   steps=8, cfg_scale=6, seed=42, style_coef=5, unknown_key="ignored")
    status, _, body = node_request(server.port, "POST", "/api/generate", request)
    assert status == 200, body
    answer = json.loads(body)
    assert set(answer) == {"id", "status"} and answer["status"] == "queued"
    job_id = answer["id"]
    seen = []
    while True:  # every 0.5 s, as the device polls, for the whole job
        status, _, body = node_request(server.port, "GET", f"/api/status/{job_id}")
        assert status == 200, body
        job = json.loads(body)
        assert job["status"] in ("queued", "running", "done") and 0 <= job["progress"] <= 1
        seen.append(job["status"])
        if job["status"] == "done":
            break
        time.sleep(0.5)
    assert job["progress"] == 1 and job["sample_rate"] == 32000 and job["seconds"] == 2
    assert job["prompt"] == "calm lofi piano" and job["error"] is None and job["completed_at"] >= job["created_at"]
    status, headers, wav = node_request(server.port, "GET", f"/api/audio/{job_id}")
    assert status == 200 and headers["content-type"] == "audio/wav"
    assert headers["content-disposition"] == f'attachment; filename="{job_id}.wav"'
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    info = sf.info(io.BytesIO(wav))
    assert info.frames == 2 * 32000 and info.samplerate == 32000 and info.channels == 1


def test_audio_formats_and_not_done_yet(client_for):
    client, app = client_for(start_worker=False)
    job_id = client.post("/api/generate", json={"prompt": "jazz", "seconds": 0.5, "seed": 1}).json()["id"]
    res = client.get(f"/api/audio/{job_id}")
    assert res.status_code == 202 and "queued" in res.json()["detail"]
    assert client.get("/api/audio/nosuchjob").status_code == 404
    app.state.worker.start()
    wait_for(lambda: client.get(f"/api/status/{job_id}").json()["status"] == "done", "the job")
    for fmt, container in (("wav", "WAV"), ("flac", "FLAC"), ("aiff", "AIFF")):
        res = client.get(f"/api/audio/{job_id}?fmt={fmt}")
        assert res.status_code == 200 and res.headers["content-disposition"].endswith(f'"{job_id}.{fmt}"')
        info = sf.info(io.BytesIO(res.content))
        assert info.format == container and info.frames == 16000
    res = client.get(f"/api/audio/{job_id}?fmt=exe")
    assert res.status_code == 400 and "fmt" in res.json()["detail"]


def test_cancelled_job_reads_as_error_cancelled(client_for):
    client, app = client_for(start_worker=False)
    job_id = client.post("/api/generate", json={"prompt": "jazz", "seconds": 1}).json()["id"]
    assert client.post(f"/api/jobs/{job_id}/cancel").status_code == 200
    job = client.get(f"/api/status/{job_id}").json()
    assert job["status"] == "error" and job["error"] == "cancelled"
    assert client.get(f"/api/jobs/{job_id}").json()["status"] == "cancelled"


def test_family_fields_of_the_other_family_are_ignored(client_for):
    client, app = client_for(start_worker=False)
    res = client.post("/api/generate", json={"prompt": "jazz", "seconds": 1, "steps": 8, "cfg_scale": 6.0,
                                             "sampler": "euler", "negative_prompt": "", "output_mode": "audio",
                                             "lora": None, "style_audio_path": None, "seed": -1})
    assert res.status_code == 200 and res.json()["status"] == "queued"
    job = client.get(f"/api/jobs/{res.json()['id']}").json()
    assert job["request"]["options"] == {} and 0 <= job["seed"]  # seed -1: random, as mlx-audiogen's "-1"
