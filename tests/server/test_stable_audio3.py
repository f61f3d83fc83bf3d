"""A server offering MusicGen and Stable Audio 3: POST /api/jobs takes Stable Audio 3's fields (from the family
table: repaint spans, extend, strength) and a loop, and mlx-audiogen's "stable_audio" reaches Stable Audio 3 when
it is the Stable Audio model offered (text, or a reference audio with its strength)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from .conftest import make_settings, wait_for

RATE = 4096  # the tiny Stable Audio 3's


@pytest.fixture(scope="module")
def served(mono_ckpt, tmp_path_factory):
    from fastapi.testclient import TestClient

    from tunesmith.server.app import create_app
    from tunesmith.server.spec import Limits

    from ..stable_audio3.tiny import save_tiny_pipeline

    sa3 = tmp_path_factory.mktemp("sa3")
    save_tiny_pipeline(sa3)
    media = tmp_path_factory.mktemp("media")
    sf.write(media / "take.wav", np.stack([0.3 * np.sin(np.arange(2 * RATE) / 7)] * 2, 1).astype(np.float32), RATE)
    # the server's own duration limit above the tiny model's 384 s: the model's limit is the one that speaks
    settings = make_settings(mono_ckpt[0], tmp_path_factory.mktemp("data"), media_dirs=[media],
                             limits=Limits(max_duration=600.0))
    settings.models = [str(mono_ckpt[0]), str(sa3)]
    app = create_app(settings)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        client.media = media
        yield client, str(sa3)


def wav_bytes(seconds: float) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([0.3 * np.sin(2 * np.pi * 220 * t)] * 2, 1), RATE, format="WAV")
    return buffer.getvalue()


def finished(client, job_id: str, path: str = "/api/jobs/{}") -> dict:
    return wait_for(lambda: (j := client.get(path.format(job_id)).json())["status"] in ("done", "error") and j,
                    "the job")


def audio_of(client, url: str) -> tuple[np.ndarray, int]:
    res = client.get(url)
    assert res.status_code == 200, res.text
    return sf.read(io.BytesIO(res.content), dtype="float32", always_2d=True)


def test_a_stable_audio_3_job_and_its_audio(served):
    import tunesmith

    client, sa3 = served
    name = [m["name"] for m in client.get("/api/models").json() if m["model_type"] == "stable_audio3"][0]
    res = client.post("/api/jobs", json={"model": name, "prompt": "calm piano", "duration": 0.5, "seed": 3,
                                         "steps": 2})
    assert res.status_code == 202, res.text
    job = finished(client, res.json()["id"])
    assert job["status"] == "done", job
    audio, rate = audio_of(client, f"/api/jobs/{job['id']}/audio")
    alone, = tunesmith.load(sa3, device="cpu", dtype="float32").generate("calm piano", duration=0.5, seed=3, steps=2)
    assert rate == alone.sample_rate == RATE and audio.T.shape == alone.audio.shape == (2, RATE // 2)
    np.testing.assert_allclose(audio.T, alone.audio, atol=1e-4)


def test_repaint_and_extend_take_an_upload(served):
    client, _ = served
    name = [m["name"] for m in client.get("/api/models").json() if m["model_type"] == "stable_audio3"][0]
    upload = client.post("/api/uploads", files={"file": ("source.wav", wav_bytes(2.0), "audio/wav")}).json()["id"]
    repaint = client.post("/api/jobs", json={"model": name, "prompt": "warm pad", "continuation": upload, "seed": 4,
                                             "repaint": [[0.5, 1.0], [1.5, None]]})
    extend = client.post("/api/jobs", json={"model": name, "prompt": "warm pad", "extend": upload, "duration": 3,
                                            "seed": 5})
    for res, seconds in ((repaint, 2.0), (extend, 3.0)):  # a repaint lasts as long as its source; -d is the total
        assert res.status_code == 202, res.text
        job = finished(client, res.json()["id"])
        assert job["status"] == "done", job
        audio, rate = audio_of(client, f"/api/jobs/{job['id']}/audio")
        assert rate == RATE and audio.shape == (int(seconds * RATE), 2)


def test_audio_to_audio_and_a_loop_are_jobs_too(served):
    """strength with the init audio as continuation: the clip lasts as long as its source (no duration); a loop
    lasts exactly its duration."""
    client, _ = served
    name = [m["name"] for m in client.get("/api/models").json() if m["model_type"] == "stable_audio3"][0]
    upload = client.post("/api/uploads", files={"file": ("source.wav", wav_bytes(1.0), "audio/wav")}).json()["id"]
    moved = client.post("/api/jobs", json={"model": name, "prompt": "bright synth", "continuation": upload,
                                           "strength": 0.5, "seed": 6, "steps": 2})
    looped = client.post("/api/jobs", json={"model": name, "prompt": "warm pad", "duration": 0.75, "loop": True,
                                            "seed": 7, "steps": 2})
    for res, seconds in ((moved, 1.0), (looped, 0.75)):
        assert res.status_code == 202, res.text
        job = finished(client, res.json()["id"])
        assert job["status"] == "done", job
        audio, rate = audio_of(client, f"/api/jobs/{job['id']}/audio")
        assert rate == RATE and audio.shape == (int(seconds * RATE), 2) and np.abs(audio).max() > 0.01
    assert client.get(f"/api/jobs/{moved.json()['id']}").json()["request"]["options"]["strength"] == 0.5


@pytest.mark.parametrize("fields, detail", [
    (dict(repaint=[0.5, 1.0]), "repaint needs the audio to repaint: give it as continuation"),
    (dict(repaint=[[0.5, 3.0]], continuation="UPLOAD"), "repaint span 0.5:3 s is not inside the 2 s clip"),
    (dict(extend="UPLOAD"), "extend needs the total length to extend it to: give it as duration"),
    (dict(extend="UPLOAD", duration=4, strength=0.5), "extend extends its audio and keeps it whole: it does not go "
                                                      "with strength"),
    (dict(temperature=1.0), "temperature is not an option of"),
    (dict(sampler="euler"), "sampler is not an option of"),
    (dict(duration=400), "duration 400 s is longer than the 384 s this model makes at once"),
    (dict(extend="UPLOAD", duration=400), "duration 400 s is longer than the 384 s this model makes at once"),
    (dict(extend="UPLOAD", duration=2), "extend lasts 2.00 s: the duration of 2 s leaves nothing to add"),
])
def test_bad_fields_are_one_line_4xx(served, fields, detail):
    client, _ = served
    name = [m["name"] for m in client.get("/api/models").json() if m["model_type"] == "stable_audio3"][0]
    upload = client.post("/api/uploads", files={"file": ("source.wav", wav_bytes(2.0), "audio/wav")}).json()["id"]
    fields = {k: upload if v == "UPLOAD" else v for k, v in fields.items()}
    res = client.post("/api/jobs", json={"model": name, "prompt": "calm piano", **fields})
    assert 400 <= res.status_code < 500 and detail in res.json()["detail"], res.text
    assert "\n" not in res.json()["detail"]


def test_mlx_audiogen_stable_audio_reaches_stable_audio_3(served):
    client, sa3 = served
    body = dict(model="stable_audio", prompt="rain on a tin roof", seconds=0.5, steps=2, cfg_scale=1, sampler="euler",
                seed=5, temperature=1, top_k=250, guidance_coef=3)
    job_id = client.post("/api/generate", json=body).json()["id"]
    job = finished(client, job_id, "/api/status/{}")
    assert job["status"] == "done", job
    audio, rate = audio_of(client, f"/api/audio/{job_id}")
    assert rate == RATE and audio.shape == (RATE // 2, 2)
    res = client.post("/api/generate", json=dict(body, seconds=500))
    assert res.status_code == 400 and res.json()["detail"].startswith("seconds")


def test_mlx_audiogen_reference_audio_is_the_init_audio(served):
    """reference_audio_path (a file under --media-dir) + reference_strength: audio-to-audio, lasting the seconds
    asked; the same job through POST /api/jobs's fields gives the same audio."""
    client, _ = served
    body = dict(model="stable_audio", prompt="warm pad", seconds=1.0, steps=2, seed=8,
                reference_audio_path=str(client.media / "take.wav"), reference_strength=0.4)
    res = client.post("/api/generate", json=body)
    assert res.status_code < 300, res.text
    job = finished(client, res.json()["id"], "/api/status/{}")
    assert job["status"] == "done", job
    audio, rate = audio_of(client, f"/api/audio/{res.json()['id']}")
    assert rate == RATE and audio.shape == (RATE, 2)
    name = [m["name"] for m in client.get("/api/models").json() if m["model_type"] == "stable_audio3"][0]
    with open(client.media / "take.wav", "rb") as f:
        upload = client.post("/api/uploads", files={"file": ("take.wav", f.read(), "audio/wav")}).json()["id"]
    same = client.post("/api/jobs", json={"model": name, "prompt": "warm pad", "duration": 1.0, "steps": 2, "seed": 8,
                                          "continuation": upload, "strength": 0.4})
    assert same.status_code == 202, same.text
    assert finished(client, same.json()["id"])["status"] == "done"
    again, _ = audio_of(client, f"/api/jobs/{same.json()['id']}/audio")
    np.testing.assert_allclose(again, audio, atol=1e-4)
    res = client.post("/api/generate", json=dict(body, reference_audio_path="/etc/passwd"))
    assert 400 <= res.status_code < 500 and "\n" not in res.json()["detail"]


def test_an_extension_is_generated_alone():
    """Its audio is an option, not the continuation field: the batching still sees an audio input."""
    from tunesmith.server.spec import batch_key

    spec = dict(family="stable_audio3", duration=3.0, loop=False, audio_prompt=None,
                options={"continuation": "/data/uploads/a.wav"})
    assert batch_key(spec, "j1") == "alone:j1"
    plain = dict(spec, options={"steps": 2})
    assert batch_key(plain, "j1") == batch_key(plain, "j2") != "alone:j1"
