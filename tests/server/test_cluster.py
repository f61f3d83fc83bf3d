"""The server on Ray Serve (`tunesmith serve --ray local`): a Ray head of the test's own on 127.0.0.1, two
generation replicas on the tiny checkpoint, jobs in the tests' PostgreSQL. Ray on a small machine is
heavy: one test walks through what the cluster must do."""

from __future__ import annotations

import io
import os
import signal
from importlib.util import find_spec

import numpy as np
import pytest
import soundfile as sf

from .conftest import wait_for
from .test_restart import ServeProcess

pytestmark = [pytest.mark.cluster, pytest.mark.slow,
              pytest.mark.skipif(find_spec("ray") is None, reason="Ray Serve is not installed: pip install -e "
                                                                  "'.[cluster]'")]

REPLICA = "x-tunesmith-replica"


def lease_owner(url: str, job_id: str) -> str | None:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT lease_owner FROM jobs WHERE id=%s AND status='running'", (job_id,)).fetchone()
    return row[0] if row else None


def audio_of(serve, path: str) -> np.ndarray:
    res = serve.client.get(path)
    assert res.status_code == 200, res.text
    audio, _ = sf.read(io.BytesIO(res.content), dtype="float32", always_2d=True)
    return audio.T


def test_replicas_share_jobs_and_a_killed_replicas_job_finishes_elsewhere(mono_ckpt, mono_model, postgres,
                                                                           tmp_path):
    url = postgres.new_database("ray")
    serve = ServeProcess(mono_ckpt[0], tmp_path / "data", "--store", url, "--ray", "local", "--replicas", "2",
                         "--lease", "2")
    try:
        # A job submitted through one ingress replica is read through another.
        prompt, duration, seed = "slow ambient pads", 45, 10
        res = serve.client.post("/api/jobs", json={"prompt": prompt, "duration": duration, "seed": seed})
        assert res.status_code == 202, res.text
        job_id, first = res.json()["id"], res.headers[REPLICA]
        other = wait_for(lambda: (r := serve.client.get(f"/api/jobs/{job_id}")).headers[REPLICA] != first and r,
                         "another ingress replica to answer")
        assert other.status_code == 200 and other.json()["id"] == job_id

        # Its progress, made in a generation replica, is seen through the ingress.
        wait_for(lambda: serve.job(job_id)["done"] > 0, "the job's progress")
        # kill -9 of the generation replica running it: the other replica runs it again, same seed.
        owner = wait_for(lambda: lease_owner(url, job_id), "a generation replica to claim the job")
        os.kill(int(owner.split(":")[1]), signal.SIGKILL)
        job = wait_for(lambda: (j := serve.job(job_id))["status"] in ("done", "error") and j, "the job to finish")
        assert (job["status"], job["runs"]) == ("done", 2), job
        clean, = mono_model.generate(prompt, duration=duration, seed=seed)
        np.testing.assert_allclose(audio_of(serve, f"/api/jobs/{job_id}/audio"), clean.audio, atol=1e-4)

        # Its events stream from any ingress replica; the security rules hold there too.
        events = serve.client.get(f"/api/jobs/{job_id}/events")
        assert events.status_code == 200 and "event: done" in events.text
        res = serve.client.get("/api/jobs", headers={"Host": "evil.example"})
        assert res.status_code == 400 and "evil.example" in res.json()["detail"]
        # An Idempotency-Key gives back the first job whichever replica the second request reaches.
        body, key = {"prompt": "calm piano", "duration": 1, "seed": 3}, {"Idempotency-Key": "cluster-key"}
        again = [serve.client.post("/api/jobs", json=body, headers=key) for _ in range(4)]
        assert [r.status_code for r in again] == [202, 200, 200, 200]
        assert len({r.json()["id"] for r in again}) == 1

        # mlx-audiogen's routes work unchanged against the cluster.
        res = serve.client.post("/api/generate", json={"prompt": "calm piano", "seconds": 1, "seed": 3})
        assert res.status_code == 200, res.text
        compat_id = res.json()["id"]
        wait_for(lambda: serve.client.get(f"/api/status/{compat_id}").json()["status"] == "done", "the mlx job")
        clean, = mono_model.generate("calm piano", duration=1, seed=3)
        np.testing.assert_allclose(audio_of(serve, f"/api/audio/{compat_id}"), clean.audio, atol=1e-4)

        # A cancel sent to an ingress replica stops the job in the generation replica running it.
        res = serve.client.post("/api/jobs", json={"prompt": "long", "duration": 60, "seed": 1})
        long_id = res.json()["id"]
        wait_for(lambda: serve.job(long_id)["done"] > 0, "the long job to be under way")
        res = serve.client.post(f"/api/jobs/{long_id}/cancel")
        assert res.status_code == 200 and res.json()["cancel_requested"] is True, res.text
        job = wait_for(lambda: (j := serve.job(long_id))["status"] not in ("queued", "running") and j,
                       "the cancel to be done")
        assert (job["status"], job["error"], job["runs"]) == ("cancelled", "cancelled", 1)
    finally:
        serve.client.close()
        serve.proc.send_signal(signal.SIGINT)
        assert serve.proc.wait(180) == 0  # Ray shut down: no replica outlives the test
    assert "stopped" in serve.lines[-1]


# ---- the parts that need no Ray head
def test_replicas_are_n_or_min_max_and_bad_values_one_line():
    from tunesmith.errors import TunesmithError
    from tunesmith.server.cluster import Replicas

    assert Replicas.parse("2") == Replicas(2, 2) and Replicas.parse("2").fixed
    assert Replicas.parse("1:4") == Replicas(1, 4) and not Replicas.parse("1:4").fixed
    for bad in ("0", "3:2", "two", "1:x", ""):
        with pytest.raises(TunesmithError, match="--replicas"):
            Replicas.parse(bad)


def test_autoscaling_follows_the_shared_queue():
    from types import SimpleNamespace

    from tunesmith.server.cluster import JOBS_PER_REPLICA, queued_jobs_policy

    def wanted(active, low=1, high=4):
        reports = {"r1": active, "r2": active}  # every replica reads the same shared queue
        ctx = SimpleNamespace(aggregated_metrics={"active_jobs": reports}, capacity_adjusted_min_replicas=low,
                              capacity_adjusted_max_replicas=high)
        return queued_jobs_policy(ctx)[0]

    assert [wanted(n) for n in (0, 1, JOBS_PER_REPLICA, JOBS_PER_REPLICA + 1, 100)] == [1, 1, 1, 2, 4]
    assert wanted(0, low=2) == 2


def test_the_cluster_needs_a_postgresql_store(mono_ckpt, tmp_path, capsys):
    from tunesmith.cli import main

    assert main(["serve", "-m", str(mono_ckpt[0]), "--data", str(tmp_path), "--ray", "local"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("tunesmith: error: --ray needs --store postgresql://USER@HOST:PORT/DB: the replicas share their "
                   "jobs there")
    assert main(["serve", "-m", str(mono_ckpt[0]), "--ray", "local", "--replicas", "3:1",
                 "--store", "postgresql://u@127.0.0.1:1/db"]) == 1
    assert "--replicas needs 1 <= MIN <= MAX" in capsys.readouterr().err


def test_the_serve_deploy_config_in_the_repo_builds(monkeypatch):
    """deploy/ray-serve.yaml is a valid Serve config whose args the application builder takes."""
    from pathlib import Path

    import yaml
    from ray.serve.schema import ServeDeploySchema

    from tunesmith.errors import TunesmithError
    from tunesmith.server.cluster import app

    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy" / "ray-serve.yaml").read_text())
    ServeDeploySchema.model_validate(config)
    (entry,) = config["applications"]
    assert entry["import_path"] == "tunesmith.server.cluster:app"
    monkeypatch.setenv("TUNESMITH_TOKEN", "a-long-enough-token")  # the config listens beyond this machine
    built = app(entry["args"])
    assert type(built).__name__ == "Application"
    monkeypatch.delenv("TUNESMITH_TOKEN")
    with pytest.raises(TunesmithError, match="opens the server to the network: give --token"):
        app(entry["args"])
    with pytest.raises(TunesmithError, match="unknown argument 'modle'"):
        app({**entry["args"], "modle": "small"})
