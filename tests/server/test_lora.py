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


def test_the_served_set_is_a_jobs_default(client_for, lora_dir, mono_ckpt):
    from tunesmith import MusicGen

    client, _ = client_for(lora_dir=lora_dir, lora=["warm@1.5"])
    res = client.post("/api/jobs", json={"prompt": "jazz", "duration": 0.4, "seed": 3, "temperature": 0})
    assert res.status_code == 202, res.text
    job = done(client, res.json()["id"])
    assert job["request"]["lora"] == [["warm", 1.5]]
    assert job["status"] == "done", job
    audio, _ = audio_of(client, job["id"])
    base, = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32").generate(
        "jazz", duration=0.4, seed=3, temperature=0)
    merged, = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32",
                                       lora=(lora_dir / "warm", 1.5)).generate("jazz", duration=0.4, seed=3,
                                                                              temperature=0)
    np.testing.assert_allclose(audio, merged.audio, atol=1e-4)  # 16-bit WAV of the merged model's clip
    assert np.abs(audio - base.audio).max() > 1e-3


@pytest.fixture(scope="module")
def loaded(mono_ckpt):
    """clip(lora) -> the 16-bit WAV of a model loaded with that set merged at load (load(lora=...)), as the jobs
    below ask for it: 0.4 s of "jazz", seed 3, greedy."""
    from tunesmith import MusicGen

    made = {}

    def clip(*lora):
        if lora not in made:
            model = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32", lora=list(lora))
            made[lora] = model.generate("jazz", duration=0.4, seed=3, temperature=0)[0].audio
        return made[lora]

    return clip


def test_each_job_runs_its_own_set_and_the_base_comes_back(client_for, lora_dir, loaded, mono_ckpt):
    """A, then none, then B, then A and B stacked: each job's audio is the model loaded with that set; the
    base weights are bit-identical after the swaps."""
    import torch

    from tunesmith import MusicGen

    client, app = client_for(start_worker=False, lora_dir=lora_dir)
    sets = ["warm@1.5", None, "bright@-0.8", ["bright@0.5", "warm"]]
    ids = []
    for lora in sets:
        res = client.post("/api/jobs", json={"prompt": "jazz", "duration": 0.4, "seed": 3, "temperature": 0,
                                             **({"lora": lora} if lora is not None else {})})
        assert res.status_code == 202, res.text
        ids.append(res.json()["id"])
    worker = app.state.worker
    worker.start()
    jobs = [done(client, i) for i in ids]
    assert [j["status"] for j in jobs] == ["done"] * 4, jobs
    assert [j["request"]["lora"] for j in jobs] == [[["warm", 1.5]], [], [["bright", -0.8]],
                                                    [["bright", 0.5], ["warm", 1.0]]]
    expected = [loaded((lora_dir / "warm", 1.5)), loaded(), loaded((lora_dir / "bright.safetensors", -0.8)),
                loaded((lora_dir / "bright.safetensors", 0.5), (lora_dir / "warm", 1.0))]
    for job, want in zip(jobs, expected):
        np.testing.assert_allclose(audio_of(client, job["id"])[0], want, atol=1e-4)  # 16-bit WAV
    assert np.abs(expected[0] - expected[1]).max() > 1e-3 and np.abs(expected[2] - expected[1]).max() > 1e-3
    assert worker._batches == 4
    model = worker.models[app.state.registry.default.name]
    assert model._swap.merges == 3 and [s.scale for s in model.lora] == [0.5, 1.0]
    model.use_lora(None)
    base = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32")._model.lm.state_dict()
    mine = model._model.lm.state_dict()
    for name, tensor in base.items():  # the packed weights, against a model that never had an adapter
        if ".cache." not in name:
            assert torch.equal(*(t.to_dense() if t.is_mkldnn else t for t in (mine[name], tensor))), name


def test_jobs_of_one_set_batch_together_and_never_with_another(client_for, lora_dir):
    client, app = client_for(start_worker=False, lora_dir=lora_dir, lora=["warm@0.5"])
    bodies = [{"lora": "bright"}, {}, {"lora": "bright@1"}, {"lora": "warm@0.5"}, {"lora": []}, {"lora": "warm"}]
    ids = [client.post("/api/jobs", json={"prompt": f"jazz {i}", "duration": 0.4, **b}).json()["id"]
           for i, b in enumerate(bodies)]
    store = app.state.store
    batches = []
    while jobs := store.claim(16):
        batches.append([ids.index(j.id) for j in jobs])
    # bright = bright@1; no field = the --lora set (warm@0.5); [] = none; warm = warm@1
    assert sorted(batches) == [[0, 2], [1, 3], [4], [5]]


def test_the_same_set_is_merged_once(client_for, lora_dir):
    client, app = client_for(lora_dir=lora_dir, lora=["warm@0.5"])
    for body in [{}, {"lora": "warm@0.5"}, {}]:  # one after another: each waits for the one before
        job = done(client, client.post("/api/jobs", json={"prompt": "jazz", "duration": 0.4, **body}).json()["id"])
        assert job["status"] == "done", job
    assert app.state.worker.models[app.state.registry.default.name]._swap.merges == 1


@pytest.mark.parametrize("lora, message", [
    ("../outside", "lora '../outside' is not an adapter of this server"),
    ("/etc/passwd", "lora '/etc/passwd' is not an adapter of this server"),
    (str("{dir}/warm"), "is not an adapter of this server"),
    ("missing", "lora 'missing' is not an adapter of this server"),
    ("notes", "lora 'notes' is not an adapter of this server"),
    ("warm@9", "a scale must be a number from -2 to 2"),
    ("warm@loud", "the scale after @ must be a number"),
    (["warm"] * 9, "lora: at most 8 adapters a job, got 9"),
])
@pytest.mark.parametrize("route", ["/api/jobs", "/api/generate"])
def test_a_bad_lora_field_is_one_line_4xx(client_for, lora_dir, lora, message, route):
    client, _ = client_for(start_worker=False, lora_dir=lora_dir, lora=["warm@0.5"])
    lora = lora.format(dir=lora_dir) if isinstance(lora, str) else lora
    res = client.post(route, json={"prompt": "jazz", "lora": lora})
    assert res.status_code == 400, res.text
    detail = res.json()["detail"]
    assert message in detail and "\n" not in detail and str(lora_dir) not in detail


def test_compat_generate_takes_a_lora_name(client_for, lora_dir, loaded):
    client, _ = client_for(lora_dir=lora_dir)
    res = client.post("/api/generate", json={"prompt": "jazz", "seconds": 0.4, "seed": 3, "temperature": 0,
                                             "lora": "bright@-0.8"})
    assert res.status_code == 200, res.text
    job = done(client, res.json()["id"])
    assert job["status"] == "done" and job["request"]["lora"] == [["bright", -0.8]], job
    np.testing.assert_allclose(audio_of(client, job["id"])[0], loaded((lora_dir / "bright.safetensors", -0.8)),
                               atol=1e-4)


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


def test_lora_for_a_family_without_adapters_is_one_line(lora_dir):
    from types import SimpleNamespace

    from tunesmith.server.loras import job_lora

    entry = SimpleNamespace(name="sao-small", family="stable_audio")
    with pytest.raises(InvalidParameter) as err:
        job_lora("warm", lora_dir, [], entry)
    assert str(err.value) == ("lora: sao-small is a Stable Audio model; LoRA adapters apply to MusicGen, ACE-Step and "
                              "Stable Audio 3 models")
    assert job_lora(None, lora_dir, [], entry) is None  # nothing stored: its jobs batch as before


def test_stable_audio_3_jobs_each_run_their_own_set(tmp_path):
    """Two jobs on a Stable Audio 3 model with different sets (a LoRA; a DoRA stacked before it): each job's audio
    is a model loaded with its set merged at load; the page's picker is offered for the model."""
    import tunesmith
    from fastapi.testclient import TestClient

    from tunesmith.server.app import create_app

    from ..stable_audio3.lora_reference import random_adapter, stability_layers, write_adapter
    from ..stable_audio3.tiny import save_tiny_pipeline
    from .conftest import make_settings

    sa3, folder = tmp_path / "sa3", tmp_path / "sa3-loras"
    pipe = save_tiny_pipeline(sa3)
    names = list(stability_layers(pipe))
    write_adapter(folder / "style.safetensors", random_adapter(pipe, "lora", 2, seed=1, names=names[::2]),
                  dict(rank=2, alpha=4.0))
    write_adapter(folder / "detail.safetensors", random_adapter(pipe, "dora-rows", 2, seed=2, size=0.5),
                  dict(rank=2, adapter_type="dora-rows"))
    sets = ["style@0.8", ["detail@-0.6", "style@0.8"]]
    with TestClient(create_app(make_settings(sa3, tmp_path / "data", lora_dir=folder)),
                    base_url="http://127.0.0.1") as client:
        model, = client.get("/api/models").json()
        assert model["model_type"] == "stable_audio3" and model["lora"] is True
        ids = [client.post("/api/jobs", json={"prompt": "calm piano", "duration": 0.5, "seed": 3, "steps": 2,
                                              "lora": lora}).json()["id"] for lora in sets]
        jobs = [done(client, i) for i in ids]
        assert [j["status"] for j in jobs] == ["done"] * 2, jobs
        assert [j["request"]["lora"] for j in jobs] == [[["style", 0.8]], [["detail", -0.6], ["style", 0.8]]]
        heard = [audio_of(client, j["id"])[0] for j in jobs]
    expected = []
    for lora in ([(folder / "style.safetensors", 0.8)],
                 [(folder / "detail.safetensors", -0.6), (folder / "style.safetensors", 0.8)]):
        clip, = tunesmith.load(sa3, device="cpu", dtype="float32", lora=lora).generate(
            "calm piano", duration=0.5, seed=3, steps=2)
        expected.append(clip.audio)
    for audio, want in zip(heard, expected):
        np.testing.assert_allclose(audio, want, atol=1e-4)  # 16-bit WAV of the merged model's clip
    assert np.abs(expected[0] - expected[1]).max() > 1e-3


def test_an_adapter_that_does_not_fit_fails_its_job_in_one_line(client_for, lora_dir, loaded):
    """An adapter for another family sits in the folder: its job fails with the line load() gives, and the model
    keeps running the sets of the jobs after it."""
    import torch

    write_single_file(lora_dir / "acestep-style.safetensors",
                      {"layers.0.self_attn.to_q.lora_A.weight": torch.zeros(2, 16),
                       "layers.0.self_attn.to_q.lora_B.weight": torch.zeros(16, 2)}, 2.0, prefix="")
    client, _ = client_for(lora_dir=lora_dir)
    bad = done(client, client.post("/api/jobs", json={"prompt": "jazz", "duration": 0.4,
                                                      "lora": "acestep-style"}).json()["id"])
    assert bad["status"] == "error" and "\n" not in bad["error"], bad
    assert "does not fit this MusicGen decoder: its layer layers.0.self_attn.to_q is none of" in bad["error"]
    assert bad["error"].startswith("LoRA acestep-style.safetensors does not fit"), bad  # the folder is not told
    good = done(client, client.post("/api/jobs", json={"prompt": "jazz", "duration": 0.4, "seed": 3, "temperature": 0,
                                                       "lora": "warm@1.5"}).json()["id"])
    assert good["status"] == "done", good
    np.testing.assert_allclose(audio_of(client, good["id"])[0], loaded((lora_dir / "warm", 1.5)), atol=1e-4)


def test_an_adapter_header_is_read_again_only_when_its_file_changes(client_for, lora_dir, mono_ckpt, monkeypatch):
    """Each submit checks the named adapters' safetensors headers: kept by (path, mtime_ns, size), so an unchanged
    file is not read again, and a file replaced in place is."""
    from tunesmith import lora

    reads = []
    real_open = open

    def counting(path, *args, **kwargs):
        reads.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(lora, "open", counting, raising=False)
    client, _ = client_for(start_worker=False, lora_dir=lora_dir)
    bright = str(lora_dir / "bright.safetensors")
    for route, body in [("/api/jobs", {"lora": "bright"}), ("/api/generate", {"lora": "bright@0.5"}),
                        ("/api/jobs", {"lora": ["bright", "warm"]})]:
        assert client.post(route, json={"prompt": "jazz", **body}).status_code in (200, 202)
    assert reads.count(bright) == 1 and reads.count(str(lora_dir / "warm" / "adapter_model.safetensors")) == 1
    write_single_file(lora_dir / "bright.safetensors", peft_layers(mono_ckpt[1], TARGETS, 2, 4, seed=5), alpha=4.0)
    assert client.post("/api/jobs", json={"prompt": "jazz", "lora": "bright"}).status_code == 202
    assert reads.count(bright) == 2  # replaced: read again
    assert client.post("/api/jobs", json={"prompt": "jazz", "lora": "bright"}).status_code == 202
    assert reads.count(bright) == 2


def test_the_header_cache_is_bounded(tmp_path, monkeypatch):
    from tunesmith import lora

    monkeypatch.setattr(lora, "HEADERS_KEPT", 3)
    import torch
    from safetensors.torch import save_file

    paths = []
    for i in range(5):
        paths.append(tmp_path / f"a{i}.safetensors")
        save_file({"x.lora_A.weight": torch.zeros(1, i + 1)}, str(paths[-1]))
        assert lora.safetensors_header(paths[-1])["x.lora_A.weight"]["shape"] == [1, i + 1]
    kept = [key[0] for key in lora._HEADERS]
    assert len(lora._HEADERS) <= 3 and str(paths[-1]) in kept and str(paths[0]) not in kept


@pytest.fixture
def misfits(lora_dir, mono_ckpt):
    """Two adapters the tiny MusicGen cannot take: one of another family (ACE-Step's layer names), one of
    another size (its q_proj reads one feature more than the decoder's width)."""
    import torch

    width = mono_ckpt[1].config.decoder.hidden_size
    write_single_file(lora_dir / "acestep-style.safetensors",
                      {"layers.0.self_attn.to_q.lora_A.weight": torch.zeros(2, 16),
                       "layers.0.self_attn.to_q.lora_B.weight": torch.zeros(16, 2)}, 2.0, prefix="")
    layer = "decoder.model.decoder.layers.0.self_attn.q_proj"
    write_peft_folder(lora_dir / "wider", {f"{layer}.lora_A.weight": torch.zeros(2, width + 1),
                                           f"{layer}.lora_B.weight": torch.zeros(width, 2)}, 2, 4, ["q_proj"])
    return width, f"base_model.model.{layer}"


@pytest.mark.parametrize("route", ["/api/jobs", "/api/generate"])
def test_an_adapter_that_does_not_fit_a_loaded_model_is_refused_at_submit(client_for, lora_dir, misfits, route):
    """Once the model has loaded (its adapter-reachable shapes recorded), a job naming an adapter of another
    family or size is a one-line 400 naming the adapter by its name and the first layer that does not fit."""
    width, layer = misfits
    client, app = client_for(lora_dir=lora_dir)
    model = app.state.registry.default.name
    first = done(client, client.post("/api/jobs", json={"prompt": "jazz", "duration": 0.2, "lora": "warm"}).json()["id"])
    assert first["status"] == "done", first  # the model is loaded: its shapes are recorded
    for lora, message in [
        ("acestep-style", f"lora 'acestep-style' does not fit {model}: its layer layers.0.self_attn.to_q is none of "
                          "the model's (an adapter for another family?)"),
        (["warm", "wider@0.5"], f"lora 'wider' does not fit {model}: layer {layer} maps {width + 1} -> {width} "
                                f"features, the model's {width} -> {width} (an adapter for another size or family)"),
    ]:
        res = client.post(route, json={"prompt": "jazz", "lora": lora})
        assert res.status_code == 400, res.text
        assert res.json()["detail"] == message
        assert str(lora_dir) not in res.text
    assert client.post(route, json={"prompt": "jazz", "lora": ["bright@0.5", "warm"]}).status_code in (200, 202)


def test_the_shapes_are_kept_in_the_data_folder_for_another_process(tmp_path):
    """What a cluster's ingress reads: the record one Fittings wrote, read by another on the same folder; one
    for another source, or a damaged one, is not used (the job's adapters are then checked as it runs)."""
    from tunesmith.lora import Fitting
    from tunesmith.server.fittings import FOLDER, Fittings

    fitting = Fitting("musicgen", {"dim": 8, "vocab_size": 16}, {"layers.0.attn.qkv.weight": (24, 8)})
    Fittings(tmp_path).record("org/model:v1", "/models/a", fitting)
    reader = Fittings(tmp_path)
    assert reader.get("org/model:v1", "/models/a") == fitting
    assert reader.get("org/model:v1", "/models/b") is None and reader.get("other", "/models/a") is None
    record, = (tmp_path / FOLDER).glob("*.json")
    record.write_text('{"model": "org/model:v1", "source": "/models/a", "fitting": {"fam')
    assert reader.get("org/model:v1", "/models/a") is None
    Fittings(None).record("x", "y", fitting)
    assert Fittings(None).get("x", "y") is None
