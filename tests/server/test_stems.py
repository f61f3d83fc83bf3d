"""POST /api/jobs/{id}/stems: a done job's clip split into stems, as a job of its own."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from ..full_disk import full_partial, needs_dev_full
from .test_jobs import audio_of, done


@pytest.fixture
def stems_client(client_for, tmp_path_factory):
    from tests.stems.tiny import save_bag

    bag = save_bag(tmp_path_factory.mktemp("server_bag"))
    client, app = client_for(worker=dict(stems_models={"htdemucs": str(bag)}))
    return client, app, bag


def test_stems_of_a_job_are_a_job_with_one_file_per_stem(stems_client):
    import tunesmith

    client, app, bag = stems_client
    source = done(client, client.post("/api/jobs", json={"prompt": "funk groove", "duration": 1, "seed": 4,
                                                         "format": "wav", "wav_format": "float"}).json()["id"])
    assert client.get("/api/stems/models").json() == [
        {"name": "htdemucs", "stems": ["drums", "bass", "other", "vocals"], "is_loaded": False}]
    res = client.post(f"/api/jobs/{source['id']}/stems", json={"format": "flac"})
    assert res.status_code == 202, res.text
    job = done(client, res.json()["id"])
    assert job["status"] == "done", job
    assert [f["stem"] for f in job["files"]] == ["drums", "bass", "other", "vocals"]
    assert job["family"] == "stems" and job["seeds"] == [4] * 4 and job["prompt"] == "funk groove"
    expected = tunesmith.separate(app.state.store.audio / app.state.store.get(source["id"]).files[0], model=bag,
                                  device="cpu")
    for f in job["files"]:
        audio, rate = audio_of(client, job["id"], f["index"])
        assert rate == 32000 and audio.shape == (1, 32000)  # the source's rate, length and channels
        np.testing.assert_allclose(audio, expected[f["stem"]].audio, atol=2e-4)  # 24-bit FLAC of the same stem
    res = client.get(f"/api/jobs/{job['id']}/audio", params={"index": 3})
    assert 'funk-groove-4-vocals.flac"' in res.headers["content-disposition"]

    two = done(client, client.post(f"/api/jobs/{source['id']}/stems", json={"two_stems": "vocals"}).json()["id"])
    assert [f["stem"] for f in two["files"]] == ["vocals", "no_vocals"] and two["format"] == "wav"
    vocals, _ = audio_of(client, two["id"], 0)
    data, _ = sf.read(io.BytesIO(client.get(f"/api/jobs/{two['id']}/audio", params={"index": 1}).content),
                      dtype="float32", always_2d=True)
    assert vocals.shape == data.T.shape == (1, 32000)


@pytest.mark.parametrize("body, status, words", [
    ({"model": "spleeter"}, 400, "not a stems model of this server"),
    ({"two_stems": "kazoo"}, 400, "two_stems must be one of drums, bass, other, vocals"),
    ({"index": 3}, 400, "has 1 clip(s)"),
    ({"shifts": 99}, 422, "shifts"),
    ({"colour": "red"}, 422, "colour"),
])
def test_bad_stems_requests_are_one_line(stems_client, body, status, words):
    client, _, _ = stems_client
    source = done(client, client.post("/api/jobs", json={"prompt": "rain", "duration": 0.3}).json()["id"])
    res = client.post(f"/api/jobs/{source['id']}/stems", json=body)
    detail = res.json()["detail"]
    assert res.status_code == status and words in detail and "\n" not in detail


def test_stems_need_a_done_job(stems_client):
    client, _, _ = stems_client
    assert client.post("/api/jobs/nosuchjob/stems", json={}).status_code == 404
    source = done(client, client.post("/api/jobs", json={"prompt": "rain", "duration": 0.3}).json()["id"])
    job = done(client, client.post(f"/api/jobs/{source['id']}/stems", json={}).json()["id"])
    res = client.post(f"/api/jobs/{job['id']}/stems", json={})
    assert res.status_code == 400 and "already holds stems" in res.json()["detail"]


@needs_dev_full
def test_stems_that_cannot_be_written_end_in_one_line(stems_client, monkeypatch):
    client, app, _ = stems_client
    source = done(client, client.post("/api/jobs", json={"prompt": "funk", "duration": 0.5}).json()["id"])
    monkeypatch.setattr("tunesmith.server.jobs.new_id", lambda: "stemsjob")  # its files' names known before
    full_partial(app.state.store.audio / "stemsjob-bass.wav")  # the second stem lands on /dev/full: ENOSPC
    job = done(client, client.post(f"/api/jobs/{source['id']}/stems", json={}).json()["id"])
    assert job["status"] == "error" and job["error"] == "the server's disk is full: cannot write the stems"


def test_a_stems_model_offline_names_serves_flag(client_for, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    client, _ = client_for(worker=dict(stems_models={"htdemucs": "htdemucs"}))  # not in the (empty) cache
    source = done(client, client.post("/api/jobs", json={"prompt": "funk", "duration": 0.3}).json()["id"])
    job = done(client, client.post(f"/api/jobs/{source['id']}/stems", json={}).json()["id"])
    assert job["status"] == "error" and "(tunesmith serve --stems-model FOLDER)" in job["error"], job["error"]
    assert "-m FOLDER" not in job["error"]


def test_serve_offers_a_local_demucs_folder_by_its_bags_name(tmp_path):
    from tests.stems.tiny import save_bag
    from tunesmith.cli.parser import build_parser
    from tunesmith.cli.serve import stems_models
    from tunesmith.errors import InvalidParameter

    six = save_bag(tmp_path / "my-demucs", name="htdemucs_6s")
    args = build_parser(["serve"]).parse_args(["serve", "--stems-model", str(six), "--stems-model", "htdemucs"])
    assert stems_models(args.stems_model) == {"htdemucs_6s": str(six), "htdemucs": "htdemucs"}  # no path shown
    with pytest.raises(InvalidParameter, match="two models are offered as htdemucs_6s"):
        stems_models([str(six), "htdemucs_6s"])
