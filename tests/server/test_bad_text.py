"""Text that is not text (lone surrogates, control characters) and numbers that are not numbers: refused
at submit with one line, before anything is stored; bad text stored by an older version never breaks a view;
one job's failure never fails its batch mates."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import soundfile as sf

from .conftest import make_settings, wait_for
from .test_jobs import done

SURROGATE = "calm \ud800 piano"


@pytest.fixture(scope="module")
def idle(mono_ckpt, tmp_path_factory):
    """A server whose worker never runs: whatever is stored stays queued, for the test to count."""
    from fastapi.testclient import TestClient

    from tunesmith.server.app import create_app

    media = tmp_path_factory.mktemp("media")
    sf.write(media / "tune.wav", np.sin(np.arange(16000) / 10)[:, None].astype(np.float32) * 0.3, 32000)
    app = create_app(make_settings(mono_ckpt[0], tmp_path_factory.mktemp("data"), media_dirs=[media]))
    yield TestClient(app, base_url="http://127.0.0.1"), app
    app.state.store.close()


def post_json(client, path, body, headers=None):
    """The body as JSON with escapes (\\ud800), as a client in another language sends a lone surrogate."""
    return client.post(path, content=json.dumps(body).encode(), headers={"content-type": "application/json",
                                                                          **(headers or {})})


def one_line(res, status):
    detail = res.json()["detail"]
    assert res.status_code == status, (res.status_code, detail)
    assert isinstance(detail, str) and detail and "\n" not in detail and "Traceback" not in detail, detail
    return detail


TEXTS = [
    ("/api/jobs", {"prompt": SURROGATE}, "prompt"),
    ("/api/jobs", {"prompt": [[0, "intro"], [1, SURROGATE]], "duration": 2}, "prompt"),
    ("/api/jobs", {"prompt": "x", "negative_prompt": SURROGATE}, "negative_prompt"),
    ("/api/jobs", {"prompt": "x", "lyrics": SURROGATE}, "lyrics"),
    ("/api/jobs", {"prompt": "x", "language": "e\ud800"}, "language"),
    ("/api/jobs", {"prompt": "x", "sampler": "dpm\ud800"}, "sampler"),
    ("/api/jobs", {"prompt": "x", "model": "m\ud800"}, "model"),
    ("/api/jobs", {"prompt": "x", "continuation": "u\ud800"}, "continuation"),
    ("/api/jobs", {"prompt": "x", "melody": "u\ud800"}, "melody"),
    ("/api/jobs", {"prompt": "calm\x00piano"}, "prompt"),
    ("/api/jobs", {"prompt": "calm\x1bpiano"}, "prompt"),
    ("/api/generate", {"prompt": SURROGATE}, "prompt"),
    ("/api/generate", {"prompt": "x", "negative_prompt": SURROGATE}, "negative_prompt"),
    ("/api/generate", {"prompt": "x", "model": "musicgen\ud800"}, "model"),
    ("/api/generate", {"prompt": "x", "melody_path": "tune\ud800.wav"}, "melody_path"),
    ("/api/generate", {"prompt": "x", "melody_path": "tune\x00.wav"}, "melody_path"),
    ("/api/generate", {"prompt": "x", "sampler": "euler\x07"}, "sampler"),
    ("/api/generate", {"prompt": "x", "output_mode": "audio\ud800"}, "output_mode"),
]


@pytest.mark.parametrize("path, body, field", TEXTS, ids=[f"{p} {json.dumps(b)[:40]}" for p, b, _ in TEXTS])
def test_bad_text_in_any_field_is_refused_before_anything_is_stored(idle, path, body, field):
    client, app = idle
    before = app.state.store.count()
    detail = one_line(post_json(client, path, body), 422)
    assert detail.startswith(f"{field}:") and ("surrogate" in detail or "control character" in detail), detail
    assert app.state.store.count() == before


def test_line_breaks_and_tabs_are_text(idle):
    client, app = idle
    res = post_json(client, "/api/jobs", {"prompt": "calm piano,\n\tslow", "duration": 0.3})
    assert res.status_code == 202, res.text
    assert client.get(f"/api/jobs/{res.json()['id']}").json()["prompt"] == "calm piano,\n\tslow"


def test_bad_idempotency_keys_and_upload_names_are_refused(idle):
    client, app = idle
    before = app.state.store.count()
    res = client.post("/api/jobs", json={"prompt": "x"}, headers={"Idempotency-Key": b"key\x85"})
    assert "Idempotency-Key" in one_line(res, 422) and app.state.store.count() == before
    wav = (app.state.store.folder.parent / "x.wav")
    sf.write(wav, np.full((3200, 1), 0.1, np.float32), 32000)
    res = client.post("/api/uploads", files={"file": ("song\x01.wav", wav.read_bytes(), "audio/wav")})
    assert res.status_code == 201  # httpx escapes it: song%01.wav
    kept = res.json()["id"]
    body = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="a\x01\x85b.wav"\r\n'
            b'Content-Type: audio/wav\r\n\r\n' + wav.read_bytes() + b'\r\n--B--\r\n')
    res = client.post("/api/uploads", content=body, headers={"content-type": "multipart/form-data; boundary=B"})
    assert "file name" in one_line(res, 422)
    # nothing of the refused one (its name, or a partial file): only the upload kept above, named by its random id
    assert [p.name.startswith(kept) for p in app.state.store.uploads.iterdir()] == [True]


def test_stored_bad_text_of_an_older_version_never_breaks_a_view(client_for):
    from tunesmith.server.store import Job

    client, app = client_for(start_worker=False)
    store = app.state.store
    good = client.post("/api/jobs", json={"prompt": "jazz", "duration": 0.3, "seed": 1}).json()["id"]
    spec = dict(store.get(good).spec, prompt=SURROGATE)
    store.add(Job("old1", "queued", store.get(good).model, "alone:old1", 1, spec, time.time()))
    store.add(Job("old2", "queued", store.get(good).model, "alone:old2", 1, {"prompt": 5}, time.time()))
    listed = client.get("/api/jobs")
    assert listed.status_code == 200, listed.text
    shown = {j["id"]: j for j in listed.json()}
    assert shown["old1"]["prompt"] == "calm \\ud800 piano" and shown[good]["prompt"] == "jazz"
    assert "cannot be shown" in shown["old2"]["error"]
    for path in ("/api/jobs/old1", "/api/status/old1", "/api/jobs/old2", "/api/status/old2"):
        assert client.get(path).status_code == 200, path
    app.state.worker.start()
    old1, old2 = done(client, "old1"), done(client, "old2")
    assert old1["status"] == old2["status"] == "error" and "surrogate" in old1["error"], (old1, old2)
    assert done(client, good)["status"] == "done"
    assert client.get("/api/jobs").status_code == 200


def test_one_jobs_failure_never_fails_its_batch_mates(client_for, monkeypatch):
    """A batch failing with a bug (a tokenizer's TypeError, ...) is run again job by job: only the guilty
    job fails."""
    import tunesmith

    client, app = client_for(start_worker=False)
    worker, entry = app.state.worker, app.state.registry.default
    model = tunesmith.load(entry.source, device="cpu", dtype="float32")
    model.name = entry.name
    generate = model.generate_request

    def flaky(request, progress=None):
        if any("poison" in text for schedule, _ in request.rows for _, text in schedule):
            raise TypeError("simulated tokenizer failure")
        return generate(request, progress=progress)

    monkeypatch.setattr(model, "generate_request", flaky)
    worker.models[entry.name] = model
    ids = [client.post("/api/jobs", json={"prompt": p, "duration": 0.3, "seed": 2}).json()["id"]
           for p in ("calm piano", "poison", "fast drums")]
    worker.start()
    jobs = [done(client, i) for i in ids]
    assert [j["status"] for j in jobs] == ["done", "error", "done"], jobs
    assert jobs[1]["error"] == "internal error: TypeError: simulated tokenizer failure"
    assert worker._batches == 4  # the three together, then each alone


LOOSE = [
    ("/api/jobs", {"duration": True}, "duration"),
    ("/api/jobs", {"duration": "10"}, "duration"),
    ("/api/jobs", {"variations": True}, "variations"),
    ("/api/jobs", {"variations": "2"}, "variations"),
    ("/api/jobs", {"variations": 2.5}, "variations"),
    ("/api/jobs", {"seed": "3"}, "seed"),
    ("/api/jobs", {"loop": "yes"}, "loop"),
    ("/api/jobs", {"loop": 1}, "loop"),
    ("/api/jobs", {"top_k": True}, "top_k"),
    ("/api/jobs", {"temperature": "1"}, "temperature"),
    ("/api/jobs", {"fade_in": False}, "fade_in"),
    ("/api/jobs", {"prompt": [[True, "x"]]}, "prompt"),
    ("/api/generate", {"seconds": True}, "seconds"),
    ("/api/generate", {"seconds": "10"}, "seconds"),
    ("/api/generate", {"seed": True}, "seed"),
    ("/api/generate", {"top_k": "250"}, "top_k"),
    ("/api/generate", {"guidance_coef": "3"}, "guidance_coef"),
]


@pytest.mark.parametrize("path, body, field", LOOSE, ids=[f"{p} {json.dumps(b)}" for p, b, _ in LOOSE])
def test_bools_and_strings_are_not_numbers(idle, path, body, field):
    client, app = idle
    before = app.state.store.count()
    detail = one_line(client.post(path, json={"prompt": "x", **body}), 422)
    assert detail.startswith(field), detail
    assert app.state.store.count() == before


def test_ints_are_numbers(idle):
    """An int is a number, and 2.0 an integer, as JSON Schema (and so /openapi.json's clients) count them."""
    client, _ = idle
    assert client.post("/api/jobs", json={"prompt": "x", "duration": 1, "temperature": 1, "cfg": 3,
                                          "fade_in": 0}).status_code == 202
    job = client.post("/api/jobs", json={"prompt": "x", "variations": 2.0, "top_k": 250.0})
    assert job.status_code == 202 and job.json()["variations"] == 2, job.text
    assert client.post("/api/generate", json={"prompt": "x", "seconds": 1, "guidance_coef": 3,
                                              "temperature": 1, "top_k": 250, "seed": 4}).status_code == 200


@pytest.mark.parametrize("variations", [0, -1, 9])
def test_variations_are_named_as_the_server_names_them(idle, variations):
    client, _ = idle
    detail = one_line(client.post("/api/jobs", json={"prompt": "x", "variations": variations}), 400)
    assert detail.startswith("variations") and "1 to 8" in detail and "num_variations" not in detail, detail


@pytest.mark.parametrize("body, field", [({"index": True}, "index"), ({"shifts": "2"}, "shifts"),
                                         ({"model": "htdemucs\x00"}, "model")])
def test_stems_bodies_are_strict_too(idle, body, field):
    client, _ = idle
    assert one_line(client.post("/api/jobs/nosuchjob/stems", json=body), 422).startswith(field)
