"""Every bad request gets the right 4xx and a one-line string detail; never a 500, never a traceback."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import soundfile as sf

from .conftest import make_settings

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def apps(mono_ckpt, tmp_path_factory):
    """An open server with a media folder (and a symlink leading out of it), and one with a token. The open one
    offers a melody model too: mlx-audiogen's "musicgen" with a melody_path goes to it."""
    from fastapi.testclient import TestClient

    from tunesmith.server.app import create_app

    from ..checkpoints import save_checkpoint

    root = tmp_path_factory.mktemp("bad")
    save_checkpoint(root / "melody", melody=True, seed=3)
    media, outside = root / "media", root / "outside"
    media.mkdir()
    outside.mkdir()
    sf.write(outside / "secret.wav", np.full((3200, 1), 0.1, np.float32), 32000)
    os.symlink(outside / "secret.wav", media / "link.wav")
    sf.write(media / "tune.wav", np.sin(np.arange(16000) / 10)[:, None].astype(np.float32) * 0.3, 32000)
    settings = make_settings(mono_ckpt[0], root / "data", media_dirs=[media], upload_limit=100_000)
    settings.models = [str(mono_ckpt[0]), str(root / "melody")]
    app = create_app(settings)
    locked = create_app(make_settings(mono_ckpt[0], root / "locked", token=TOKEN))
    client = TestClient(app, base_url="http://127.0.0.1")
    finished = client.post("/api/generate", json={"prompt": "jazz", "seconds": 1}).json()["id"]
    client.post(f"/api/jobs/{finished}/cancel")
    yield {"open": client, "locked": TestClient(locked, base_url="http://127.0.0.1"), "finished": finished}
    for a in (app, locked):
        a.state.store.close()


def wav_bytes(seconds=0.5):
    buffer = io.BytesIO()
    sf.write(buffer, np.full((int(32000 * seconds), 1), 0.1, np.float32), 32000, format="WAV")
    return buffer.getvalue()


GEN = "/api/generate"
CASES = [
    # name, app, method, path, request keywords, status
    ("malformed JSON", "open", "POST", GEN, dict(content=b'{"prompt": "x",', headers={"content-type": "application/json"}), 422),
    ("body not an object", "open", "POST", GEN, dict(json=["prompt"]), 422),
    ("prompt missing", "open", "POST", GEN, dict(json={"seconds": 2}), 422),
    ("prompt a number", "open", "POST", GEN, dict(json={"prompt": 5}), 422),
    ("seconds a word", "open", "POST", GEN, dict(json={"prompt": "x", "seconds": "long"}), 422),
    ("seconds NaN", "open", "POST", GEN, dict(content=b'{"prompt": "x", "seconds": NaN}', headers={"content-type": "application/json"}), 400),
    ("seconds Infinity", "open", "POST", GEN, dict(content=b'{"prompt": "x", "seconds": Infinity}', headers={"content-type": "application/json"}), 400),
    ("seconds huge", "open", "POST", GEN, dict(json={"prompt": "x", "seconds": 1e300}), 400),
    ("seconds negative", "open", "POST", GEN, dict(json={"prompt": "x", "seconds": -3}), 400),
    ("seed huge", "open", "POST", GEN, dict(json={"prompt": "x", "seed": 10**30}), 400),
    ("top_k a fraction", "open", "POST", GEN, dict(json={"prompt": "x", "top_k": 2.5}), 422),
    ("temperature negative", "open", "POST", GEN, dict(json={"prompt": "x", "temperature": -1}), 400),
    ("guidance out of range", "open", "POST", GEN, dict(json={"prompt": "x", "guidance_coef": 1000}), 400),
    ("empty prompt", "open", "POST", GEN, dict(json={"prompt": "   "}), 400),
    ("1 MB prompt", "open", "POST", GEN, dict(json={"prompt": "a" * 1_000_000}), 413),
    ("10k-character prompt", "open", "POST", GEN, dict(json={"prompt": "piano " * 2000}), 400),
    ("unknown model", "open", "POST", GEN, dict(json={"prompt": "x", "model": "no-such-model"}), 400),
    ("no stable audio model", "open", "POST", GEN, dict(json={"prompt": "x", "model": "stable_audio"}), 400),
    ("melody_path ../../etc/passwd", "open", "POST", GEN, dict(json={"prompt": "x", "melody_path": "../../etc/passwd"}), 400),
    ("melody_path absolute outside", "open", "POST", GEN, dict(json={"prompt": "x", "melody_path": "/etc/passwd"}), 400),
    ("melody_path symlink out", "open", "POST", GEN, dict(json={"prompt": "x", "melody_path": "link.wav"}), 400),
    ("melody_path NUL byte", "open", "POST", GEN, dict(json={"prompt": "x", "melody_path": "a\u0000b"}), 422),
    ("melody: to the melody model offered", "open", "POST", GEN, dict(json={"prompt": "x", "melody_path": "tune.wav"}), None),
    ("style audio", "open", "POST", GEN, dict(json={"prompt": "x", "style_audio_path": "tune.wav"}), 400),
    ("lora", "open", "POST", GEN, dict(json={"prompt": "x", "lora": "my-style"}), 400),
    ("midi output", "open", "POST", GEN, dict(json={"prompt": "x", "output_mode": "midi"}), 400),
    ("own API: unknown field", "open", "POST", "/api/jobs", dict(json={"prompt": "x", "tempo": 120}), 422),
    ("own API: other family's option", "open", "POST", "/api/jobs", dict(json={"prompt": "x", "steps": 8}), 400),
    ("own API: variations 0", "open", "POST", "/api/jobs", dict(json={"prompt": "x", "variations": 0}), 400),
    ("own API: variations 1000", "open", "POST", "/api/jobs", dict(json={"prompt": "x", "variations": 1000}), 400),
    ("own API: schedule not at 0", "open", "POST", "/api/jobs", dict(json={"prompt": [[2, "x"]], "duration": 5}), 400),
    ("own API: schedule of junk", "open", "POST", "/api/jobs", dict(json={"prompt": [[0, "x", 3]]}), 422),
    ("own API: unknown upload", "open", "POST", "/api/jobs", dict(json={"prompt": "x", "continuation": "nope"}), 400),
    ("own API: fades past the end", "open", "POST", "/api/jobs", dict(json={"prompt": "x", "duration": 1, "fade_out": 2}), 400),
    ("own API: loudness +5", "open", "POST", "/api/jobs", dict(json={"prompt": "x", "loudness": 5}), 400),
    ("own API: format exe", "open", "POST", "/api/jobs", dict(json={"prompt": "x", "format": "exe"}), 422),
    ("own API: idempotency key too long", "open", "POST", "/api/jobs", dict(json={"prompt": "x"}, headers={"Idempotency-Key": "k" * 500}), 422),
    ("non-audio upload", "open", "POST", "/api/uploads", dict(files={"file": ("notes.wav", b"not audio at all" * 100, "audio/wav")}), 400),
    ("oversized upload", "open", "POST", "/api/uploads", dict(files={"file": ("big.wav", wav_bytes(5), "audio/wav")}), 413),
    ("upload without a file", "open", "POST", "/api/uploads", dict(data={"x": "1"}), 422),
    ("foreign Host (DNS rebinding)", "open", "GET", "/api/jobs", dict(headers={"Host": "evil.example:8420"}), 400),
    ("foreign Origin", "open", "POST", GEN, dict(json={"prompt": "x"}, headers={"Origin": "https://evil.example"}), 403),
    ("null Origin", "open", "POST", GEN, dict(json={"prompt": "x"}, headers={"Origin": "null"}), 403),
    ("no token when required", "locked", "POST", GEN, dict(json={"prompt": "x"}), 401),
    ("wrong token", "locked", "GET", "/api/jobs", dict(headers={"Authorization": "Bearer nope"}), 401),
    ("status of unknown job", "open", "GET", "/api/status/unknown", {}, 404),
    ("status of a path-like id", "open", "GET", "/api/status/..%2F..%2Fetc", {}, 404),
    ("cancel unknown job", "open", "POST", "/api/jobs/unknown/cancel", {}, 404),
    ("cancel finished job", "open", "POST", "/api/jobs/{finished}/cancel", {}, 409),
    ("audio of a cancelled job", "open", "GET", "/api/audio/{finished}", {}, 409),
    ("audio index out of range", "open", "GET", "/api/jobs/{finished}/audio?index=-1", {}, 422),
    ("unknown route", "open", "GET", "/api/nothing-here", {}, 404),
    ("wrong method", "open", "PUT", "/api/jobs", dict(json={}), 405),
]


@pytest.mark.parametrize("name,app,method,path,kwargs,status", CASES, ids=[c[0] for c in CASES])
def test_bad_input(apps, name, app, method, path, kwargs, status):
    res = apps[app].request(method, path.format(finished=apps["finished"]), **kwargs)
    body = res.json()
    if status is None:  # not bad after all: accepted
        assert res.status_code == 200
        return
    assert res.status_code == status, (res.status_code, body)
    detail = body["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail and "Traceback" not in detail, detail
    assert len(detail) < 500


def test_with_the_token_everything_works(apps):
    locked = apps["locked"]
    assert locked.get("/api/health").status_code == 200  # open, for clients' liveness probes
    headers = {"Authorization": f"Bearer {TOKEN}"}
    res = locked.post(GEN, json={"prompt": "x", "seconds": 0.2}, headers=headers)
    assert res.status_code == 200
    assert locked.get(f"/api/status/{res.json()['id']}", params={"access_token": TOKEN}).status_code == 200


def test_same_origin_and_listed_origins_pass(mono_ckpt, tmp_path):
    from fastapi.testclient import TestClient

    from tunesmith.server.app import create_app

    app = create_app(make_settings(mono_ckpt[0], tmp_path / "d", cors=["https://studio.example"]))
    client = TestClient(app, base_url="http://127.0.0.1:8420")
    try:
        for origin in ("http://127.0.0.1:8420", "https://studio.example"):
            res = client.post(GEN, json={"prompt": "x", "seconds": 0.2}, headers={"Origin": origin})
            assert res.status_code == 200, res.json()
        preflight = client.options(GEN, headers={"Origin": "https://studio.example",
                                                 "Access-Control-Request-Method": "POST"})
        assert preflight.headers["access-control-allow-origin"] == "https://studio.example"
        assert client.get("/api/health", headers={"Host": "localhost:8420"}).status_code == 200
        assert "<html" in client.get("/").text
    finally:
        app.state.store.close()


def test_melody_on_a_plain_model_is_ignored_with_a_warning(client_for, tmp_path):
    """DAW clients send melody_path whatever the model (the JUCE plugin its sidechain): on a model that cannot
    follow one it is ignored, as mlx-audiogen does, and the job says so."""
    media = tmp_path / "media"
    media.mkdir()
    sf.write(media / "tune.wav", np.sin(np.arange(16000) / 10)[:, None].astype(np.float32) * 0.3, 32000)
    client, _ = client_for(media_dirs=[media])
    job_id = client.post(GEN, json={"prompt": "x", "seconds": 0.5, "melody_path": "tune.wav"}).json()["id"]
    from .conftest import wait_for

    job = wait_for(lambda: (j := client.get(f"/api/status/{job_id}").json())["status"] in ("done", "error") and j,
                   "the job")
    assert job["status"] == "done", job
    assert job["warning"].startswith("melody_path was ignored") and "cannot follow a melody" in job["warning"]
    assert client.get(f"/api/jobs/{job_id}").json()["warning"] == job["warning"]
    assert client.get(f"/api/jobs/{job_id}").json()["request"]["options"].get("melody") is None
