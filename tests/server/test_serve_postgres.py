"""`tunesmith serve --store postgresql://...` on one machine: the same server with its jobs in PostgreSQL,
which may go away and come back (a restart, a failover) without a job being lost."""

from __future__ import annotations

import io
import signal

import numpy as np
import pytest
import soundfile as sf

from tunesmith.cli import main

from .conftest import wait_for
from .postgres import PostgresServer, postgres_bin
from .test_restart import ServeProcess

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

UNREACHABLE = "the job store (PostgreSQL) cannot be reached: try again shortly"


@pytest.fixture
def own_postgres(postgres):
    """A PostgreSQL of this test alone (it is stopped and started): the session's is left running."""
    server = PostgresServer(postgres_bin())
    server.start()
    yield server
    server.remove()


def test_a_postgresql_restart_mid_run_is_503_then_nothing_lost(mono_ckpt, mono_model, own_postgres, tmp_path):
    url = own_postgres.new_database("jobs")
    serve = ServeProcess(mono_ckpt[0], tmp_path / "data", "--store", url)
    try:
        specs = [("calm piano", 0.5, 3), ("slow ambient pads", 15, 10), ("rock drums", 1, 30)]
        ids = [serve.client.post("/api/jobs", json={"prompt": p, "duration": d, "seed": s}).json()["id"]
               for p, d, s in specs[:2]]
        wait_for(lambda: serve.job(ids[0])["status"] == "done", "the first job")
        wait_for(lambda: serve.job(ids[1])["done"] > 0, "the long job to be under way")

        own_postgres.stop("immediate")  # as a crash of the database server
        for method, path, body in (("GET", f"/api/jobs/{ids[0]}", None), ("GET", "/api/jobs", None),
                                   ("POST", "/api/jobs", {"prompt": "refused", "duration": 1}),
                                   ("GET", f"/api/jobs/{ids[0]}/audio", None)):
            res = serve.client.request(method, path, json=body)
            assert (res.status_code, res.json()) == (503, {"detail": UNREACHABLE}), (method, path)
        health = serve.client.get("/api/health")
        assert health.status_code == 503 and health.json()["store"] == UNREACHABLE

        own_postgres.start()
        prompt, duration, seed = specs[2]
        res = serve.client.post("/api/jobs", json={"prompt": prompt, "duration": duration, "seed": seed})
        assert res.status_code == 202, res.text
        ids.append(res.json()["id"])
        jobs = [wait_for(lambda i=i: (j := serve.job(i))["status"] in ("done", "error") and j, f"job {i}")
                for i in ids]
        assert [j["status"] for j in jobs] == ["done"] * 3
        assert [j["runs"] for j in jobs] == [1, 1, 1]  # the job under way when the store went kept its run
        assert serve.client.get("/api/health").json()["store"] == "ok"
        for (prompt, duration, seed), job in zip(specs, jobs):
            res = serve.client.get(f"/api/jobs/{job['id']}/audio")
            audio, _ = sf.read(io.BytesIO(res.content), dtype="float32", always_2d=True)
            clean, = mono_model.generate(prompt, duration=duration, seed=seed)
            np.testing.assert_allclose(audio.T, clean.audio, atol=1e-4)
        assert sorted(p.name for p in (tmp_path / "data" / "audio").iterdir()) == sorted(f"{i}-0.wav" for i in ids)
    finally:
        assert serve.kill(signal.SIGINT) == 0
    assert not any("Traceback" in line for line in serve.lines), "".join(serve.lines)


def test_serve_says_in_one_line_when_the_store_cannot_be_reached(mono_ckpt, tmp_path, capsys):
    assert main(["serve", "-m", str(mono_ckpt[0]), "--data", str(tmp_path), "--port", "0",
                 "--store", "postgresql://tunesmith:secret@127.0.0.1:1/jobs"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tunesmith: error: cannot open the job store postgresql://tunesmith@127.0.0.1:1/jobs: ")
    assert "\n" not in err and "secret" not in err
    assert main(["serve", "-m", str(mono_ckpt[0]), "--store", "sqlite:///x"]) == 1
    assert "--store must be a postgresql://USER@HOST:PORT/DB address" in capsys.readouterr().err
