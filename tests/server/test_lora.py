"""The server's LoRA adapters (--lora-dir, --lora NAME@SCALE, GET /api/loras, a job's lora field) and a job's
bpm, key, time_signature and bars."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.audio.meter import bars_seconds
from tunesmith.errors import InvalidParameter

from ..lora_adapters import peft_layers, write_peft_folder, write_single_file
from .test_jobs import audio_of, done

TARGETS = ["q_proj", "v_proj", "fc1"]


@pytest.fixture
def lora_dir(mono_ckpt, tmp_path):
    folder = tmp_path / "loras"
    layers = peft_layers(mono_ckpt[1], TARGETS, 4, 8, seed=3, size=0.5)
    write_peft_folder(folder / "warm", layers, 4, 8, TARGETS)
    write_single_file(folder / "bright.safetensors", layers, alpha=8.0)
    (folder / "notes.txt").write_text("not an adapter")
    (tmp_path / "outside.safetensors").write_bytes((folder / "bright.safetensors").read_bytes())
    return folder


def test_loras_lists_names_never_paths(client_for, lora_dir):
    client, _ = client_for(start_worker=False, lora_dir=lora_dir, lora=["warm@0.5"])
    body = client.get("/api/loras").json()
    assert body == {"loras": [{"name": "bright", "form": "file"}, {"name": "warm", "form": "peft folder"}],
                    "active": {"model": body["active"]["model"], "loras": [{"name": "warm", "scale": 0.5}]}}
    assert str(lora_dir) not in str(body)


def test_a_server_without_lora_dir_lists_none(client_for):
    client, _ = client_for(start_worker=False)
    assert client.get("/api/loras").json()["loras"] == []


def test_a_served_adapter_changes_the_audio(client_for, lora_dir, mono_ckpt):
    from tunesmith import MusicGen

    client, _ = client_for(lora_dir=lora_dir, lora=["warm@1.5"])
    res = client.post("/api/jobs", json={"prompt": "jazz", "duration": 0.4, "seed": 3, "temperature": 0,
                                         "lora": "warm@1.5"})
    assert res.status_code == 202, res.text
    job = done(client, res.json()["id"])
    assert job["status"] == "done", job
    audio, _ = audio_of(client, job["id"])
    base, = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32").generate(
        "jazz", duration=0.4, seed=3, temperature=0)
    merged, = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32",
                                       lora=(lora_dir / "warm", 1.5)).generate("jazz", duration=0.4, seed=3,
                                                                              temperature=0)
    np.testing.assert_allclose(audio, merged.audio, atol=1e-4)  # 16-bit WAV of the merged model's clip
    assert np.abs(audio - base.audio).max() > 1e-3


@pytest.mark.parametrize("lora, message", [
    ("../outside", "lora '../outside' is not an adapter of this server"),
    ("/etc/passwd", "lora '/etc/passwd' is not an adapter of this server"),
    ("missing", "lora 'missing' is not an adapter of this server"),
    ("notes", "lora 'notes' is not an adapter of this server"),
    ("bright", "does not swap adapters per job; "),
    ("warm@0.7", "does not swap adapters per job; "),
    ("warm@9", "a scale must be a number from -2 to 2"),
])
def test_a_bad_lora_field_is_one_line_4xx(client_for, lora_dir, lora, message):
    client, _ = client_for(start_worker=False, lora_dir=lora_dir, lora=["warm@0.5"])
    res = client.post("/api/jobs", json={"prompt": "jazz", "duration": 0.4, "lora": lora})
    assert res.status_code == 400, res.text
    detail = res.json()["detail"]
    assert message in detail and "\n" not in detail and str(lora_dir) not in detail


def test_lora_field_without_lora_dir_is_refused(client_for):
    client, _ = client_for(start_worker=False)
    res = client.post("/api/jobs", json={"prompt": "jazz", "lora": "warm"})
    assert res.status_code == 400 and "start it with --lora-dir DIR" in res.json()["detail"]


@pytest.mark.parametrize("changes, message", [
    (dict(lora=["warm"]), "--lora NAME@SCALE names an adapter of --lora-dir DIR"),
    (dict(lora_dir="missing-folder"), "--lora-dir missing-folder is not a folder"),
    (dict(lora=["nope@1"], lora_dir=True), "--lora nope 'nope' is not an adapter of this server"),
    (dict(lora=["warm@5"], lora_dir=True), "a scale must be a number from -2 to 2"),
])
def test_bad_serve_lora_settings_are_one_line(client_for, lora_dir, changes, message):
    if changes.get("lora_dir") is True:
        changes["lora_dir"] = lora_dir
    with pytest.raises(InvalidParameter, match=None) as err:
        client_for(start_worker=False, **changes)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_meter_fields_come_from_the_table_and_set_the_length(client_for):
    client, _ = client_for()
    schema = client.get("/openapi.json").json()["components"]["schemas"]["JobIn"]["properties"]
    assert {"bpm", "key", "time_signature", "bars", "lora"} <= set(schema)
    res = client.post("/api/jobs", json={"prompt": "jazz", "bpm": 300, "bars": 1, "time_signature": 2,
                                         "key": "c minor", "seed": 2})
    assert res.status_code == 202, res.text
    job = done(client, res.json()["id"])
    assert job["status"] == "done", job
    audio, rate = audio_of(client, job["id"])
    assert audio.shape[1] == round(bars_seconds(1, 300, 2) * rate)
    # the meter as written: "3/4" is 3 beats a bar
    res = client.post("/api/jobs", json={"prompt": "jazz", "bpm": 300, "bars": 1, "time_signature": "3/4", "seed": 2})
    assert res.status_code == 202, res.text
    job = done(client, res.json()["id"])
    assert job["status"] == "done", job
    audio, rate = audio_of(client, job["id"])
    assert audio.shape[1] == round(bars_seconds(1, 300, 3) * rate)


@pytest.mark.parametrize("body, message", [
    ({"bpm": 500}, "bpm must be a tempo from 30 to 300 beats a minute"),
    ({"bars": 4}, "bars needs bpm"),
    ({"key": "H major"}, "key must be a tonic and a mode"),
    ({"time_signature": 5}, "time_signature must be 2, 3, 4 or 6 beats per bar"),
    ({"time_signature": "7/8"}, "time_signature must be 2, 3, 4 or 6 beats per bar (2/4, 3/4, 4/4, 6/8), got '7/8'"),
])
def test_bad_meter_fields_are_one_line_400(client_for, body, message):
    client, _ = client_for(start_worker=False)
    res = client.post("/api/jobs", json={"prompt": "jazz", **body})
    assert res.status_code == 400, res.text
    assert res.json()["detail"].startswith(message)


@pytest.mark.parametrize("value, shown", [("4/4 but longer", '"4/4 but longer"'), ([3, 4], "[3, 4]"), (True, "true")])
def test_a_meter_of_the_wrong_type_is_one_line_422(client_for, value, shown):
    client, _ = client_for(start_worker=False)
    res = client.post("/api/jobs", json={"prompt": "jazz", "time_signature": value})
    assert res.status_code == 422, res.text
    assert res.json()["detail"] == f'time_signature must be a meter as written, "3/4", or its beats a bar, 3, got {shown}'
