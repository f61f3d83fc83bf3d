"""A server offering ACE-Step: lyrics and language through POST /api/jobs, the family's name through the
compatible routes, other families' options refused."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from ..acestep.conftest import ace_ckpt, ace_model  # noqa: F401,F811  (the tiny pipeline the family's tests build)
from .conftest import make_settings
from .test_jobs import done


@pytest.fixture(scope="module")
def songs(mono_ckpt, ace_ckpt, tmp_path_factory):  # noqa: F811
    from fastapi.testclient import TestClient

    from tunesmith.server.app import create_app

    settings = make_settings(mono_ckpt[0], tmp_path_factory.mktemp("data"))
    settings.models = [str(mono_ckpt[0]), str(ace_ckpt[0])]
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        yield client, str(ace_ckpt[0])


def test_a_song_with_lyrics_is_the_models_own(songs, ace_model):  # noqa: F811
    client, ace = songs
    lyrics = "[verse]\nrain on the window\nlights in the hall"
    res = client.post("/api/jobs", json={"model": ace, "prompt": "indie pop, female vocals", "duration": 10,
                                         "seed": 3, "lyrics": lyrics, "language": "en", "wav_format": "float"})
    assert res.status_code == 202, res.text
    job = done(client, res.json()["id"])
    assert job["status"] == "done" and job["family"] == "acestep", job
    data, rate = sf.read(io.BytesIO(client.get(f"/api/jobs/{job['id']}/audio").content), dtype="float32",
                         always_2d=True)
    expected, = ace_model.generate("indie pop, female vocals", lyrics=lyrics, language="en", duration=10, seed=3)
    assert rate == 48000 and data.T.shape == expected.audio.shape == (2, 480000)
    np.testing.assert_allclose(data.T, expected.audio, atol=1e-6)


@pytest.mark.parametrize("model, body, words", [
    ("ace", {"temperature": 1.0}, "temperature is not an option of"),
    ("musicgen", {"lyrics": "la la la"}, "lyrics is not an option of"),
    ("ace", {"language": "klingon!"}, "language must be a language code"),
    ("ace", {"duration": 4}, "duration"),
])
def test_options_of_other_families_and_bad_values_are_refused(songs, mono_ckpt, model, body, words):
    client, ace = songs
    name = ace if model == "ace" else str(mono_ckpt[0])
    res = client.post("/api/jobs", json={"model": name, "prompt": "song", "duration": 10, **body})
    assert res.status_code == 400 and words in res.json()["detail"], res.text


def test_the_compatible_route_knows_the_family(songs):
    client, _ = songs
    assert [m["model_type"] for m in client.get("/api/models").json()] == ["musicgen", "acestep"]
    job_id = client.post("/api/generate", json={"model": "acestep", "prompt": "lofi", "seconds": 10, "seed": 1,
                                                "steps": 2}).json()["id"]
    job = done(client, job_id)
    assert job["status"] == "done" and job["request"]["options"]["steps"] == 2, job


def test_a_repaint_of_an_uploaded_song(songs, ace_model):  # noqa: F811
    from ..acestep.test_repaint import song

    client, ace = songs
    source = song(10.0)
    buffer = io.BytesIO()
    sf.write(buffer, source.T, 48000, format="WAV", subtype="FLOAT")
    upload = client.post("/api/uploads", files={"file": ("song.wav", buffer.getvalue(), "audio/wav")}).json()
    body = {"model": ace, "prompt": "dream pop", "seed": 5, "steps": 2, "continuation": upload["id"],
            "repaint": [2, 6], "wav_format": "float"}
    res = client.post("/api/jobs", json=body)
    assert res.status_code == 202, res.text
    job = done(client, res.json()["id"])
    assert job["status"] == "done" and job["duration"] == 10.0, job
    data, rate = sf.read(io.BytesIO(client.get(f"/api/jobs/{job['id']}/audio").content), dtype="float32",
                         always_2d=True)
    expected, = ace_model.generate("dream pop", audio_prompt=(source, 48000), repaint=(2, 6), seed=5, steps=2)
    assert rate == 48000 and data.T.shape == expected.audio.shape == (2, 480000)
    np.testing.assert_allclose(data.T, expected.audio, atol=1e-6)
    for change, status, words in [({"continuation": None}, 400, "repaint needs the song to repaint"),
                                  ({"repaint": [6, 2]}, 400, "repaint ends at 2 s, not after its start (6 s)"),
                                  ({"duration": 30}, 400, "a repaint keeps the length"),
                                  ({"repaint": [1, "soon"]}, 422, "repaint")]:
        res = client.post("/api/jobs", json={**body, **change})
        assert res.status_code == status and words in res.json()["detail"], res.text


def test_cfg_for_a_turbo_alias_is_refused_before_anything_loads(tmp_path):
    from fastapi.testclient import TestClient

    from tunesmith.server.app import create_app

    settings = make_settings("acestep", tmp_path / "data")  # an alias: described, never downloaded here
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        res = client.post("/api/jobs", json={"model": "acestep", "prompt": "pop", "duration": 10, "cfg": 3})
    assert res.status_code == 400 and "cfg does not apply to turbo" in res.json()["detail"], res.text
