"""Models by public name (an alias, or a folder's own name, never its server path), and melodies only for
models that can follow one."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from .conftest import make_settings


@pytest.fixture(scope="module")
def offered(mono_ckpt, tmp_path_factory):
    """A server (its worker idle) offering the tiny checkpoint twice, from two folders of the same name, and a
    melody checkpoint."""
    from fastapi.testclient import TestClient

    from tunesmith.server.app import create_app

    from ..checkpoints import save_checkpoint

    root = tmp_path_factory.mktemp("names")
    for side in ("a", "b"):
        (root / side).mkdir()
        (root / side / "ckpt").symlink_to(mono_ckpt[0], target_is_directory=True)
    save_checkpoint(root / "tunes", melody=True, seed=3)
    media = root / "media"
    media.mkdir()
    sf.write(media / "tune.wav", np.sin(np.arange(16000) / 10)[:, None].astype(np.float32) * 0.3, 32000)
    settings = make_settings(mono_ckpt[0], root / "data", media_dirs=[media])
    settings.models = [str(root / "a" / "ckpt"), str(root / "b" / "ckpt"), str(root / "tunes")]
    app = create_app(settings)
    yield TestClient(app, base_url="http://127.0.0.1"), app, root
    app.state.store.close()


def test_models_are_listed_by_name_never_by_path(offered):
    client, _, root = offered
    models = client.get("/api/models").json()
    assert [(m["name"], m["melody"]) for m in models] == [("ckpt", False), ("ckpt-2", False), ("tunes", True)]
    assert str(root) not in client.get("/api/models").text


def test_jobs_take_the_public_name_or_the_operators_path_and_show_the_name(offered):
    client, _, root = offered
    for model, shown in (("ckpt-2", "ckpt-2"), (str(root / "b" / "ckpt"), "ckpt-2"), ("ckpt", "ckpt"), (None, "ckpt")):
        res = client.post("/api/jobs", json={"prompt": "x", "duration": 0.3, **({"model": model} if model else {})})
        assert res.status_code == 202, res.text
        job = res.json()
        assert job["model"] == job["request"]["model"] == shown, job
        assert client.get(f"/api/status/{job['id']}").json()["model"] == shown
    job_id = client.post("/api/generate", json={"model": "ckpt-2", "prompt": "x", "seconds": 0.3}).json()["id"]
    assert client.get(f"/api/status/{job_id}").json()["model"] == "ckpt-2"
    assert str(root) not in client.get("/api/jobs").text
    res = client.post("/api/jobs", json={"prompt": "x", "model": "nope"})
    assert res.status_code == 400 and str(root) not in res.json()["detail"] and "ckpt-2" in res.json()["detail"]


def test_a_job_sent_by_public_name_runs(client_for, mono_ckpt):
    from .test_jobs import done

    client, _ = client_for()
    res = client.post("/api/jobs", json={"model": mono_ckpt[0].name, "prompt": "x", "duration": 0.3})
    assert res.status_code == 202, res.text
    job = done(client, res.json()["id"])
    assert job["status"] == "done" and job["model"] == mono_ckpt[0].name, job


def test_names_are_unique_and_leave_the_family_names_to_their_family(tmp_path):
    from tunesmith.models import ModelSpec
    from tunesmith.server.registry import public_names

    for folder in ("x/musicgen", "y/musicgen", "small", "z/musicgen"):
        (tmp_path / folder).mkdir(parents=True)
    given = ["small", str(tmp_path / "x/musicgen"), str(tmp_path / "y/musicgen"), str(tmp_path / "small"),
             str(tmp_path / "z/musicgen")]
    specs = [ModelSpec("musicgen", None), ModelSpec("stable_audio", 47.0), ModelSpec("musicgen", None),
             ModelSpec("musicgen", None), ModelSpec("musicgen", None)]
    assert public_names(given, specs) == ["small", "musicgen-2", "musicgen", "small-2", "musicgen-3"]


def test_a_melody_upload_is_refused_at_submit_by_a_model_that_cannot_follow_one(offered):
    client, app, _ = offered
    buffer = io.BytesIO()
    sf.write(buffer, np.sin(np.arange(16000) / 10)[:, None].astype(np.float32) * 0.3, 32000, format="WAV")
    upload = client.post("/api/uploads", files={"file": ("tune.wav", buffer.getvalue(), "audio/wav")}).json()["id"]
    before = app.state.store.count()
    res = client.post("/api/jobs", json={"model": "ckpt", "prompt": "x", "duration": 0.3, "melody": upload})
    detail = res.json()["detail"]
    assert res.status_code == 400 and detail == "melody: ckpt cannot follow a melody (melody models: tunes)", detail
    assert app.state.store.count() == before
    res = client.post("/api/jobs", json={"model": "tunes", "prompt": "x", "duration": 0.3, "melody": upload})
    assert res.status_code == 202 and res.json()["request"]["options"]["melody"].endswith(".wav"), res.text


def test_mlx_audiogens_melody_goes_to_a_melody_model_or_is_ignored_with_a_warning(offered):
    client, app, _ = offered
    job_id = client.post("/api/generate", json={"prompt": "x", "seconds": 0.3, "melody_path": "tune.wav"}).json()["id"]
    status = client.get(f"/api/status/{job_id}").json()
    assert status["model"] == "tunes" and status["warning"] is None, status
    res = client.post("/api/generate", json={"model": "ckpt", "prompt": "x", "seconds": 0.3,
                                             "melody_path": "anywhere/sidechain.wav"})
    assert res.status_code == 200, res.text
    job = client.get(f"/api/jobs/{res.json()['id']}").json()
    assert job["warning"] == "melody_path was ignored: ckpt cannot follow a melody"
    assert "melody" not in job["request"]["options"]
    assert client.get(f"/api/status/{job['id']}").json()["warning"] == job["warning"]


def test_describe_knows_a_melody_model(mono_ckpt, tmp_path):
    from tunesmith.models import describe

    from ..checkpoints import save_checkpoint

    save_checkpoint(tmp_path, melody=True, seed=3)
    assert describe(tmp_path).melody and not describe(mono_ckpt[0]).melody and describe("melody").melody
