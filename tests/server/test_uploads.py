"""POST /api/uploads under hostile input: decompression bombs and lying headers (413), floods of uploads
(429), large bodies streamed to disk; server paths kept out of what clients read; what a crash leaves
behind swept at the next start."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile as sf

from ..audio.long_files import claim_frames, silent_flac
from ..audio.test_io import MB, traced_peak
from .conftest import wait_for
from .test_jobs import done


def send(client, path, kind="audio/flac"):
    return client.post("/api/uploads", files={"file": (path.name, path.read_bytes(), kind)})


def wav_bytes(audio: np.ndarray, rate: int = 32000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV")
    return buffer.getvalue()


# ---- decoded length (413)
def test_a_decompression_bomb_is_refused_413_without_being_decoded(client_for, tmp_path):
    client, app = client_for(start_worker=False)
    bomb = silent_flac(tmp_path / "bomb.flac", 1800)  # 30 minutes of silence: 115 MB decoded
    assert bomb.stat().st_size < MB
    res, peak = traced_peak(lambda: send(client, bomb))
    assert res.status_code == 413, res.text
    assert res.json()["detail"] == "the upload lasts 1800.0 s: more than the 360 s allowed"  # 300 s jobs + 60
    assert peak < 8 * MB, peak
    assert not list(app.state.store.uploads.iterdir())  # neither kept nor left half written


def test_a_header_claiming_2_36_samples_answers_413_not_500(client_for, tmp_path):
    client, _ = client_for(start_worker=False)
    liar = claim_frames(silent_flac(tmp_path / "liar.flac", 2), 2**36 - 1)
    res = send(client, liar)
    assert res.status_code == 413 and res.json()["detail"].startswith("the upload lasts 4294967.3 s: more than")


def test_audio_whose_header_gives_no_length_is_stopped_while_decoding(client_for, tmp_path):
    client, _ = client_for(start_worker=False, upload_seconds=5)
    unknown = claim_frames(silent_flac(tmp_path / "unknown.flac", 60, 48000, 2), 0)  # 23 MB decoded
    res, peak = traced_peak(lambda: send(client, unknown))
    assert res.status_code == 413
    assert res.json()["detail"] == "the upload lasts more than 5.0 s: more than the 5 s allowed"
    assert peak < 4 * MB, peak  # probed block by block: not even the allowed 5 s is held


def test_the_limit_is_the_longest_audio_a_served_model_takes():
    from tunesmith.models import ModelSpec
    from tunesmith.server.registry import Entry, Registry
    from tunesmith.server.spec import Limits
    from tunesmith.server.uploads import longest_upload

    musicgen, ace, stable = ModelSpec("musicgen", None), ModelSpec("acestep", 600.0), ModelSpec("stable_audio", 47.0)
    assert longest_upload(Registry([Entry("small", musicgen), Entry("ace", ace)]), Limits()) == 660
    assert longest_upload(Registry([Entry("small", musicgen)]), Limits(max_duration=120)) == 180
    assert longest_upload(Registry([Entry("open", stable)]), Limits()) == 107


# ---- memory and concurrency
def test_a_large_upload_is_streamed_to_disk_not_held(start_server, tmp_path):
    server = start_server(upload_limit=64 * MB, upload_seconds=600)
    big = tmp_path / "big.wav"
    with sf.SoundFile(str(big), "w", 44100, 2, subtype="PCM_16") as out:
        for _ in range(180):
            out.write(np.full((44100, 2), 0.1, np.float32))
    assert big.stat().st_size > 30 * MB
    client = ("import sys, httpx; r = httpx.post(sys.argv[1], files={'file': ('big.wav', open(sys.argv[2], 'rb'), "
              "'audio/wav')}, timeout=300); print(r.status_code, r.text)")
    proc, peak = traced_peak(lambda: subprocess.run([sys.executable, "-c", client, f"{server.url}/api/uploads",
                                                     str(big)], capture_output=True, text=True, timeout=300))
    status, body = proc.stdout.split(" ", 1)
    assert status == "201", proc.stdout + proc.stderr
    assert json.loads(body)["seconds"] == 180
    assert peak < 8 * MB, peak  # the server's memory while it received, stored and probed 30 MB


def test_upload_slots_are_given_back():
    from starlette.exceptions import HTTPException

    from tunesmith.server.uploads import UploadSlots

    slots = UploadSlots(1)
    with slots.slot():
        with pytest.raises(HTTPException) as refused:
            with slots.slot():
                pass
        assert refused.value.status_code == 429 and refused.value.headers == {"Retry-After": "5"}
    with pytest.raises(ValueError):
        with slots.slot():
            raise ValueError("a failed upload")
    assert slots.taken == 0


def test_uploads_past_max_uploads_are_answered_429(start_server):
    import httpx

    server = start_server(max_uploads=2)
    url = f"{server.url}/api/uploads"
    boundary = "tunesmithboundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            'Content-Type: audio/wav\r\n\r\n').encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    audio = wav_bytes(np.full(16000, 0.1, np.float32))
    gates, answers = [threading.Event(), threading.Event()], []

    def held(gate):  # a chunked body that stops halfway until its gate opens
        yield head + audio[:1000]
        gate.wait(120)
        yield audio[1000:] + tail

    def post(gate):
        answers.append(httpx.post(url, content=held(gate), timeout=120,
                                  headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}))

    threads = [threading.Thread(target=post, args=(g,)) for g in gates]
    for t in threads:
        t.start()
    slots = server.app.state.upload_slots
    wait_for(lambda: slots.taken == 2, "two uploads being received")
    refused = httpx.post(url, files={"file": ("b.wav", audio, "audio/wav")}, timeout=60)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "5"
    assert refused.json() == {"detail": "2 uploads are being received: try again shortly"}
    for gate in gates:
        gate.set()
    for t in threads:
        t.join(120)
    assert [a.status_code for a in answers] == [201, 201] and answers[0].json()["seconds"] == 0.5
    assert httpx.post(url, files={"file": ("b.wav", audio, "audio/wav")}, timeout=60).status_code == 201


# ---- server paths
def test_job_errors_reach_clients_without_server_paths(client_for):
    client, app = client_for(start_worker=False)
    store = app.state.store
    job_id = client.post("/api/jobs", json={"prompt": "jazz", "duration": 0.3}).json()["id"]
    store.fail(job_id, f"cannot write {store.audio / (job_id + '-0.wav')}: No space left on device")
    said = "cannot write the job's audio: No space left on device"
    assert client.get(f"/api/jobs/{job_id}").json()["error"] == said
    assert client.get(f"/api/status/{job_id}").json()["error"] == said
    res = client.get(f"/api/jobs/{job_id}/audio")
    assert res.status_code == 409 and res.json()["detail"] == f"job {job_id} has no audio: {said}"
    assert str(store.folder) not in client.get("/api/jobs").text


def test_errors_about_uploads_and_media_files_name_no_server_path(client_for, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    sf.write(str(media / "quiet.wav"), np.zeros(16000, np.float32), 32000)
    client, _ = client_for(start_worker=False, media_dirs=[media])
    upload = client.post("/api/uploads", files={"file": ("quiet.wav", (media / "quiet.wav").read_bytes(),
                                                         "audio/wav")}).json()
    res = client.post("/api/jobs", json={"prompt": "jazz", "duration": 1, "continuation": upload["id"]})
    assert res.status_code == 400
    assert res.json()["detail"] == "the upload is silent: there is nothing to continue"
    res = client.post("/api/generate", json={"prompt": "jazz", "melody_path": "quiet.wav"})
    assert res.status_code == 200  # a model without melodies ignores one: its warning names no server path
    warning = client.get(f"/api/status/{res.json()['id']}").json()["warning"]
    assert warning and str(media) not in warning and str(tmp_path) not in warning


def test_a_failed_conversion_names_no_server_path(client_for, monkeypatch):
    """A conversion that fails (here the encoder refusing its target) says why without the server's paths.
    (A file damaged since the job finished is answered 410 before any conversion: test_damaged_audio.)"""
    import tunesmith.audio.io as io

    client, app = client_for()
    job = done(client, client.post("/api/jobs", json={"prompt": "jazz", "duration": 0.3}).json()["id"])

    def refuse(path, *args, **kwargs):
        raise io.TunesmithError(f"cannot write {path}: Permission denied")

    monkeypatch.setattr(io, "write_audio", refuse)
    res = client.get(f"/api/jobs/{job['id']}/audio", params={"fmt": "flac"})
    assert res.status_code == 400
    assert res.json()["detail"] == "cannot convert the job's audio to flac: Permission denied"
    assert str(app.state.store.folder) not in res.text


# ---- crash leftovers
def test_what_a_crash_leaves_is_swept_when_the_store_starts(tmp_path):
    from tunesmith.server.store import Store

    data = tmp_path / "data"
    Store(data).close()
    leftovers = [data / "uploads" / ".abc.partial.flac",  # an upload being received (kill -9)
                 data / "audio" / ".job-0.mp3.partial.mp3", data / "audio" / ".job-0.mp3.partial.source.wav",
                 data / "tmp" / "x.mp3", data / "tmp" / "old" / "decoded.wav"]
    kept = [data / "uploads" / "abc.flac", data / "audio" / "job-0.wav"]
    for path in leftovers + kept:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
    Store(data).close()
    assert [p for p in leftovers if p.exists()] == [] and not (data / "tmp" / "old").exists()
    assert all(p.exists() for p in kept)
