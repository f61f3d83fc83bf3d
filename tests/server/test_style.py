"""A server offering MusicGen-Style: style audio by upload (own route) or under --media-dir (mlx-audiogen's
style_audio_path, style_coef), each job's clip the model's own for the same seed."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from ..musicgen.test_style import SR, music
from .conftest import make_settings
from .test_jobs import done


@pytest.fixture(scope="module")
def styled(mono_ckpt, style_ckpt, tmp_path_factory):
    from fastapi.testclient import TestClient

    import tunesmith
    from tunesmith.server.app import create_app

    style = style_ckpt[0]
    media = tmp_path_factory.mktemp("media")
    sf.write(str(media / "reference.wav"), music(4.0), SR)
    settings = make_settings(mono_ckpt[0], tmp_path_factory.mktemp("data"), media_dirs=[media])
    settings.models = [str(mono_ckpt[0]), str(style)]
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        yield client, str(style), media, tunesmith.load(style, device="cpu", dtype="float32")


def audio_of(client, job_id):
    data, _ = sf.read(io.BytesIO(client.get(f"/api/jobs/{job_id}/audio").content), dtype="float32", always_2d=True)
    return data.T


def test_style_by_upload_is_the_models_own(styled):
    client, style, media, model = styled
    upload = client.post("/api/uploads", files={"file": ("ref.wav", (media / "reference.wav").read_bytes(),
                                                         "audio/wav")}).json()
    res = client.post("/api/jobs", json={"model": style, "prompt": "lofi piano", "duration": 0.3, "seed": 2,
                                         "style": upload["id"], "cfg_beta": 4, "style_start": 1,
                                         "wav_format": "float"})
    assert res.status_code == 202, res.text
    job = done(client, res.json()["id"])
    assert job["status"] == "done", job
    assert job["request"]["options"]["style"].endswith(".wav") and "/" not in job["request"]["options"]["style"]
    expected, = model.generate("lofi piano", style=media / "reference.wav", cfg_beta=4, style_start=1,
                               duration=0.3, seed=2)
    np.testing.assert_allclose(audio_of(client, job["id"]), expected.audio, atol=1e-6)


def test_mlx_audiogen_style_fields_reach_the_style_model(styled):
    client, _, media, model = styled
    # "musicgen" with style audio: the first style model offered, style_coef as cfg_beta
    job_id = client.post("/api/generate", json={"model": "musicgen", "prompt": "funk", "seconds": 0.3, "seed": 7,
                                                "style_audio_path": "reference.wav", "style_coef": 3}).json()["id"]
    job = done(client, job_id)
    assert job["status"] == "done" and job["request"]["options"]["cfg_beta"] == 3, job
    expected, = model.generate("funk", style=media / "reference.wav", cfg_beta=3, duration=0.3, seed=7)
    np.testing.assert_allclose(audio_of(client, job_id), expected.audio, atol=1e-4)  # 16-bit WAV


@pytest.mark.parametrize("route, body, words", [
    ("/api/generate", {"style_audio_path": "../../etc/passwd"}, "outside the media folders"),
    ("/api/jobs", {"style": "nosuchupload"}, "no upload"),
    ("/api/jobs", {"cfg_beta": 3, "plain": True}, "cfg_beta needs a MusicGen-Style model"),
    ("/api/jobs", {"style_quantizers": 9, "style": "UPLOAD"}, "style_quantizers"),
])
def test_bad_style_requests_are_one_line(styled, mono_ckpt, route, body, words):
    client, style, media, _ = styled
    body = dict(body)
    if body.get("style") == "UPLOAD":
        body["style"] = client.post("/api/uploads", files={"file": ("r.wav", (media / "reference.wav").read_bytes(),
                                                                    "audio/wav")}).json()["id"]
    model = str(mono_ckpt[0]) if body.pop("plain", False) else style
    base = {"model": model, "prompt": "x"} | ({"seconds": 0.3} if route == "/api/generate" else {"duration": 0.3})
    res = client.post(route, json=base | body)
    detail = res.json()["detail"]
    assert res.status_code == 400 and words in detail and "\n" not in detail, res.text
