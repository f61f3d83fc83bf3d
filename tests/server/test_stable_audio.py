"""A server offering both families: mlx-audiogen's "stable_audio" model and its fields reach Stable Audio."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from .conftest import make_settings, wait_for


@pytest.fixture(scope="module")
def both(mono_ckpt, tmp_path_factory):
    from fastapi.testclient import TestClient

    from tunesmith.server.app import create_app

    from ..stable_audio.tiny import save_tiny_pipeline

    sao = tmp_path_factory.mktemp("sao")
    save_tiny_pipeline(sao)
    settings = make_settings(mono_ckpt[0], tmp_path_factory.mktemp("data"))
    settings.models = [str(mono_ckpt[0]), str(sao)]
    app = create_app(settings)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client, str(sao)


def test_stable_audio_through_the_compatible_routes(both):
    import tunesmith

    client, sao = both
    models = client.get("/api/models").json()
    assert [m["model_type"] for m in models] == ["musicgen", "stable_audio"]
    # The JUCE plugin's Stable Audio body: its sampler names are mlx-audiogen's own (the model's default is used).
    body = dict(model="stable_audio", prompt="rain on a tin roof", seconds=0.5, steps=4, cfg_scale=6, sampler="euler",
                seed=5, temperature=1, top_k=250, guidance_coef=3)
    job_id = client.post("/api/generate", json=body).json()["id"]
    job = wait_for(lambda: (j := client.get(f"/api/status/{job_id}").json())["status"] in ("done", "error") and j,
                   "the job")
    assert job["status"] == "done", job
    audio, rate = sf.read(io.BytesIO(client.get(f"/api/audio/{job_id}").content), dtype="float32", always_2d=True)
    model = tunesmith.load(sao, device="cpu", dtype="float32")
    alone, = model.generate("rain on a tin roof", duration=0.5, seed=5, steps=4, cfg=6)
    assert rate == alone.sample_rate and audio.T.shape == alone.audio.shape
    np.testing.assert_allclose(audio.T, alone.audio, atol=1e-4)
    res = client.post("/api/generate", json=dict(body, seconds=30))
    assert res.status_code == 400 and res.json()["detail"].startswith("seconds")
    res = client.post("/api/jobs", json={"model": sao, "prompt": "rain", "duration": 0.5, "temperature": 1})
    assert res.status_code == 400 and "temperature" in res.json()["detail"]
