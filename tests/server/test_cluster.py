"""The server on Ray Serve (`tunesmith serve --ray local`): a Ray head of the test's own on 127.0.0.1, two
generation replicas on the tiny checkpoint, jobs in the tests' PostgreSQL. Ray on a small machine is
heavy: one test walks through what the cluster must do."""

from __future__ import annotations

import io
import ipaddress
import os
import signal
import socket
from importlib.util import find_spec
from types import SimpleNamespace

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


TOKEN = "s3cret-token-for-tests"
WARM = ["q_proj", "v_proj", "fc1"]


def loopback(address: str) -> bool:
    return ipaddress.ip_address(address.split("%")[0]).is_loopback or address == "::ffff:127.0.0.1"


def security_cases(port: int) -> list[tuple[str, str, str, dict]]:
    """test_bad_input's Host, Origin, token and media-folder checks (and what must pass), with the token."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    own = {"Origin": f"http://127.0.0.1:{port}", **auth}
    return [
        ("foreign Host", "GET", "/api/jobs", dict(headers={"Host": f"evil.example:{port}", **auth})),
        ("foreign Origin", "POST", "/api/generate", dict(json={"prompt": "x"},
                                                          headers={"Origin": "https://evil.example", **auth})),
        ("null Origin", "POST", "/api/generate", dict(json={"prompt": "x"}, headers={"Origin": "null", **auth})),
        ("no token", "POST", "/api/generate", dict(json={"prompt": "x"})),
        ("wrong token", "GET", "/api/jobs", dict(headers={"Authorization": "Bearer nope"})),
        ("token in the query", "GET", "/api/jobs", dict(params={"access_token": TOKEN})),
        ("health needs none", "GET", "/api/health", {}),
        ("melody_path ../../etc/passwd", "POST", "/api/generate",
         dict(json={"prompt": "x", "melody_path": "../../etc/passwd"}, headers=auth)),
        ("melody_path outside", "POST", "/api/generate", dict(json={"prompt": "x", "melody_path": "/etc/passwd"},
                                                             headers=auth)),
        ("melody_path symlink out", "POST", "/api/generate", dict(json={"prompt": "x", "melody_path": "link.wav"},
                                                                 headers=auth)),
        ("lora outside its folder", "POST", "/api/jobs", dict(json={"prompt": "x", "lora": "../outside"},
                                                             headers=auth)),
        ("same origin", "POST", "/api/jobs", dict(json={"prompt": "x", "duration": 0.2}, headers=own)),
    ]


def test_a_local_cluster_on_loopback_keeps_the_rules_merges_the_lora_and_scales(mono_ckpt, postgres, tmp_path):
    """`--ray local --replicas 1:2`: every listening socket of the Ray processes is on 127.0.0.1; the Host,
    Origin, token and media-folder rules answer through the cluster exactly as the single-machine server does;
    each replica's probe is in the shared folder; the generation replica merges --lora into the default model,
    and jobs naming other sets run with them swapped in (each equal to a load-time merge); once the model has
    loaded, the ingress refuses an adapter that does not fit it at submit (the shapes shared through the folder);
    more queued jobs than JOBS_PER_REPLICA bring a second generation replica, which reads the others' probes
    and takes jobs from the same queue."""
    import psutil
    import psycopg
    import torch
    from fastapi.testclient import TestClient

    from tunesmith import MusicGen
    from tunesmith.server.app import create_app
    from tunesmith.server.cluster import JOBS_PER_REPLICA
    from tunesmith.server.shared_folder import PROBES

    from ..checkpoints import save_checkpoint
    from ..lora_adapters import peft_layers, write_peft_folder, write_single_file
    from .conftest import make_settings

    media, outside, loras = tmp_path / "media", tmp_path / "outside", tmp_path / "loras"
    media.mkdir()
    outside.mkdir()
    sf.write(outside / "secret.wav", np.full((3200, 1), 0.1, np.float32), 32000)
    os.symlink(outside / "secret.wav", media / "link.wav")
    write_peft_folder(loras / "warm", peft_layers(mono_ckpt[1], WARM, 4, 8, seed=3, size=0.5), 4, 8, WARM)
    write_single_file(loras / "bright.safetensors", peft_layers(mono_ckpt[1], WARM, 4, 8, seed=5, size=0.5), 8.0)
    write_single_file(loras / "acestep-style.safetensors",  # another family's layer names
                      {"layers.0.self_attn.to_q.lora_A.weight": torch.zeros(2, 16),
                       "layers.0.self_attn.to_q.lora_B.weight": torch.zeros(16, 2)}, 2.0, prefix="")
    save_checkpoint(tmp_path / "melody", melody=True, seed=3)  # mlx-audiogen's melody_path goes to it
    url = postgres.new_database("rules")
    options = dict(token=TOKEN, media_dirs=[media], lora_dir=loras, lora=["warm@1.5"])
    serve = ServeProcess(mono_ckpt[0], tmp_path / "data", "-m", str(tmp_path / "melody"), "--store", url, "--ray",
                         "local", "--replicas", "1:2", "--token", TOKEN, "--media-dir", str(media), "--lora-dir",
                         str(loras), "--lora", "warm@1.5")
    single_settings = make_settings(mono_ckpt[0], tmp_path / "single", **options)
    single_settings.models.append(str(tmp_path / "melody"))
    single = create_app(single_settings)
    auth, ids = {"Authorization": f"Bearer {TOKEN}"}, []

    def probes():
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT replica, token FROM probes").fetchall()
        assert all((tmp_path / "data" / PROBES / r).read_text() == t for r, t in rows)
        return sorted(r.split("-")[0] for r, _ in rows)

    def owners() -> set[str]:
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT DISTINCT lease_owner FROM jobs WHERE status='running'").fetchall()
        return {r[0] for r in rows}

    try:
        tree = [psutil.Process(serve.proc.pid), *psutil.Process(serve.proc.pid).children(recursive=True)]
        names = {p.name() for p in tree}
        assert {"gcs_server", "raylet"} <= names, names
        listening = [(p.name(), c.laddr) for p in tree for c in p.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN]
        assert ("ray::ProxyActor", ("127.0.0.1", serve.port)) in [(n, tuple(a)) for n, a in listening]
        assert [(n, a) for n, a in listening if not loopback(a.ip)] == []

        # The security rules: the same status and detail through the cluster as on one machine.
        alone = TestClient(single, base_url=f"http://127.0.0.1:{serve.port}")
        for name, method, path, kwargs in security_cases(serve.port):
            there, here = serve.client.request(method, path, **kwargs), alone.request(method, path, **kwargs)
            assert there.status_code == here.status_code, (name, there.text, here.text)
            if there.status_code >= 400:
                assert there.json() == here.json(), name
        assert [serve.client.request(m, p, **k).status_code for _, m, p, k in security_cases(serve.port)] == [
            400, 403, 403, 401, 401, 200, 200, 400, 400, 400, 400, 202]

        # Each replica (two ingress, one generation) left its probe in the shared folder.
        assert probes() == ["Generation", "Ingress", "Ingress"]

        # The generation replica's default model has --lora merged in; jobs naming other sets have them swapped
        # in for their batch: each job's audio is that of a model loaded with its set merged.
        body = {"prompt": "jazz", "duration": 0.4, "seed": 3, "temperature": 0}
        sets = {None: [(loras / "warm", 1.5)], "bright@-0.8": [(loras / "bright.safetensors", -0.8)],
                ("bright@0.5", "warm"): [(loras / "bright.safetensors", 0.5), (loras / "warm", 1.0)]}
        jobs = {}
        for lora in sets:
            extra = {} if lora is None else {"lora": lora if isinstance(lora, str) else list(lora)}
            res = serve.client.post("/api/jobs", json={**body, **extra}, headers=auth)
            assert res.status_code == 202, res.text
            jobs[lora] = res.json()["id"]
        for lora, merged_with in sets.items():
            job_id = jobs[lora]
            job = wait_for(lambda job_id=job_id: (j := serve.client.get(f"/api/jobs/{job_id}", headers=auth).json())[
                "status"] in ("done", "error") and j, "the job", limit_s=300)  # the first loads the model
            assert job["status"] == "done", job
            res = serve.client.get(f"/api/jobs/{job_id}/audio", headers=auth)
            audio, _ = sf.read(io.BytesIO(res.content), dtype="float32", always_2d=True)
            merged, = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float32",
                                               lora=merged_with).generate("jazz", duration=0.4, seed=3, temperature=0)
            np.testing.assert_allclose(audio.T, merged.audio, atol=1e-4, err_msg=str(lora))
        # The model has loaded on a generation replica: the ingress replicas, which load none, refuse an adapter
        # that does not fit it at submit, from the shapes the replica recorded in the shared folder.
        model = mono_ckpt[0].name
        for _ in range(4):  # whichever ingress replica answers
            res = serve.client.post("/api/jobs", json={**body, "lora": "acestep-style"}, headers=auth)
            assert res.status_code == 400, res.text
            assert res.json()["detail"] == (f"lora 'acestep-style' does not fit {model}: its layer "
                                            "layers.0.self_attn.to_q is none of the model's (an adapter for another "
                                            "family?)")

        # Jobs queue (durations apart, so that no two batch together): a second generation replica comes, having
        # read the other replicas' probes, and takes jobs from the same queue. The queue holds ~25 s of work a job
        # here (idle), 400 s in all, so that the first replica cannot empty it before a second has started on a
        # loaded machine (50 s clips, 5 s of work each, once could: CI's run gave up waiting).
        ids += [serve.client.post("/api/jobs", json={"prompt": "slow pads", "duration": 240 + i, "seed": i},
                                  headers=auth).json()["id"] for i in range(4 * JOBS_PER_REPLICA)]
        assert len(wait_for(owners, "the first replica to run a job")) == 1
        wait_for(lambda: len(owners()) == 2, "a second generation replica to take a job", limit_s=400)
        assert probes() == ["Generation", "Generation", "Ingress", "Ingress"]
    finally:
        for job_id in ids:
            serve.client.post(f"/api/jobs/{job_id}/cancel", headers=auth)
        single.state.store.close()
        serve.client.close()
        serve.proc.send_signal(signal.SIGINT)
        assert serve.proc.wait(180) == 0
    with psycopg.connect(url) as conn:  # a clean stop takes the probes away
        assert conn.execute("SELECT replica FROM probes").fetchall() == []


def test_a_cluster_whose_folder_is_not_shared_refuses_to_start_in_one_line(mono_ckpt, postgres, tmp_path):
    """A replica that cannot read another's probe (here: one listed in the store whose file is not in this
    machine's folder, as a node of its own would have) stops the start; `serve --ray` says why in one line."""
    import subprocess
    import sys

    from tunesmith.server.store_postgres import PostgresStore

    from .test_restart import ROOT

    url = postgres.new_database("unshared")
    store = PostgresStore(url, tmp_path / "data")
    store.add_probe("Generation-elsewhere", "a1b2", "node-2")  # its file is on node-2's own folder
    store.close()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "tunesmith", "serve", "-m", str(mono_ckpt[0]), "--port", "0",
                           "--data", str(tmp_path / "data"), "--device", "cpu", "--store", url, "--ray", "local"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"tunesmith: error: the data folder {tmp_path / 'data'} is not shared: on {socket.gethostname()} it lacks "
        "the probe file that replica Generation-elsewhere wrote there on node-2; every node must mount the same "
        "folder (NFS, or an object store mounted there)")


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
    from tunesmith.server.cluster import JOBS_PER_REPLICA, queued_jobs_policy

    def wanted(active, low=1, high=4):
        reports = {"r1": active, "r2": active}  # every replica reads the same shared queue
        ctx = SimpleNamespace(aggregated_metrics={"active_jobs": reports}, capacity_adjusted_min_replicas=low,
                              capacity_adjusted_max_replicas=high)
        return queued_jobs_policy(ctx)[0]

    assert [wanted(n) for n in (0, 1, JOBS_PER_REPLICA, JOBS_PER_REPLICA + 1, 100)] == [1, 1, 1, 2, 4]
    assert wanted(0, low=2) == 2


@pytest.mark.parametrize("failure", ["killed", "late"])
def test_a_proxy_that_ray_restarted_is_waited_for(failure, monkeypatch):
    """On a loaded machine Ray's controller kills an HTTP proxy slow to start, and serve.start raises although
    the controller starts another: the start waits for that one; one that never comes is one line."""
    import ray
    from ray.serve.schema import ProxyStatus

    from tunesmith.errors import TunesmithError
    from tunesmith.server import cluster

    starts, states = [], iter([{}, {"node": ProxyStatus.STARTING}, {"node": ProxyStatus.HEALTHY}])

    def start(http_options):
        starts.append(http_options)
        if len(starts) == 1:
            raise ray.exceptions.ActorDiedError() if failure == "killed" else TimeoutError("HTTP proxies not available")

    monkeypatch.setattr(cluster.serve, "start", start)
    monkeypatch.setattr(cluster.serve, "status", lambda: SimpleNamespace(proxies=next(states)))
    monkeypatch.setattr("time.sleep", lambda s: None)
    cluster.start_proxies({"port": 8000})
    assert starts == [{"port": 8000}] * 2 and next(states, None) is None

    starts.clear()
    monkeypatch.setattr(cluster.serve, "status", lambda: SimpleNamespace(proxies={"node": ProxyStatus.UNHEALTHY}))
    monkeypatch.setattr(cluster, "PROXY_WAIT_S", 0.0)
    with pytest.raises(TunesmithError, match=r"^Ray's HTTP proxy did not start in 0 s \(proxies: UNHEALTHY\)$"):
        cluster.start_proxies({"port": 8000})


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


def test_a_replica_that_cannot_see_anothers_probe_stops_with_one_line(postgres, tmp_path):
    """Each replica writes a probe named after itself and reads every other's; one on a node that does not
    see the same folder (here: the other's probe is gone from it) refuses to start, saying why."""
    from tunesmith.errors import TunesmithError
    from tunesmith.server.shared_folder import PROBES, SharedFolder
    from tunesmith.server.store_postgres import PostgresStore

    url = postgres.new_database("probes")
    stores = [PostgresStore(url, tmp_path / "data") for _ in range(3)]
    try:
        first, second, third = (SharedFolder(s, f"Ingress-{i}") for i, s in enumerate(stores))
        assert first.check() == 0 and second.check() == 1  # the second read the first's probe
        assert sorted(p.name for p in (tmp_path / "data" / PROBES).iterdir()) == ["Ingress-0", "Ingress-1"]
        first.path.unlink()  # what a node with a folder of its own would see
        with pytest.raises(TunesmithError) as err:
            third.check()
        line = str(err.value)
        assert line == (f"the data folder {tmp_path / 'data'} is not shared: on {socket.gethostname()} it lacks "
                        "the probe file that replica Ingress-0 wrote there on " f"{socket.gethostname()}; every node "
                        "must mount the same folder (NFS, or an object store mounted there)")
        assert not third.path.exists() and [p["replica"] for p in stores[0].probes(60)] == ["Ingress-0", "Ingress-1"]
        first.remove()  # a clean stop: no longer looked for
        assert third.check() == 1 and [p["replica"] for p in stores[0].probes(60)] == ["Ingress-1", "Ingress-2"]
    finally:
        for s in stores:
            s.close()


def test_the_proxy_and_ingress_replicas_take_the_servers_connection_limits(tmp_path):
    """What Ray Serve has of the single-machine server's limits: the keep-alive on its HTTP proxies, the
    connection cap as each ingress replica's requests at once and queued (more: 503); no request deadline."""
    from ray.serve.config import HTTPOptions

    from tunesmith.server.cluster import Replicas, build, http_options
    from tunesmith.server.settings import ServerSettings

    settings = ServerSettings(data=tmp_path, store="postgresql://u@127.0.0.1:1/db", keep_alive_s=7,
                              max_connections=50)
    proxy = HTTPOptions(**http_options(settings, 8420))
    assert (proxy.host, proxy.port, proxy.keep_alive_timeout_s, proxy.request_timeout_s) == ("127.0.0.1", 8420, 7,
                                                                                              None)
    ingress = build(settings, Replicas(1, 2))._bound_deployment
    assert (ingress.name, ingress.max_ongoing_requests, ingress.max_queued_requests) == ("Ingress", 50, 50)
