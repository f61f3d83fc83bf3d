"""An Idempotency-Key is bound to the request it came with (route and body), as Stripe does: the same request
again gets the same job, another request with that key a 422. Stores of older versions gain the column."""

from __future__ import annotations

import sqlite3

from .test_jobs import done


def post(client, body, key, path="/api/jobs"):
    return client.post(path, json=body, headers={"Idempotency-Key": key})


def test_the_same_key_with_another_body_is_refused(client_for):
    client, app = client_for(start_worker=False)
    body = {"prompt": "ambient pads", "duration": 0.3, "seed": 4}
    first = post(client, body, "k-1")
    assert first.status_code == 202
    same = post(client, {"seed": 4, "duration": 0.3, "prompt": "ambient pads", "variations": 1}, "k-1")
    assert same.status_code == 200 and same.json()["id"] == first.json()["id"]  # key order, defaults: the same
    other = post(client, dict(body, prompt="loud drums"), "k-1")
    detail = other.json()["detail"]
    assert other.status_code == 422 and "already used for another request" in detail and "\n" not in detail
    assert app.state.store.count() == 1


def test_a_stems_request_cannot_reuse_a_generation_key(client_for, tmp_path_factory):
    from tests.stems.tiny import save_bag

    client, app = client_for(worker=dict(stems_models={"htdemucs": str(save_bag(tmp_path_factory.mktemp("bag")))}))
    source = post(client, {"prompt": "funk", "duration": 0.3}, "gen-key").json()
    assert done(client, source["id"])["status"] == "done"
    res = post(client, {}, "gen-key", f"/api/jobs/{source['id']}/stems")
    assert res.status_code == 422 and "already used for another request" in res.json()["detail"], res.text
    first = post(client, {}, "stems-key", f"/api/jobs/{source['id']}/stems")
    again = post(client, {}, "stems-key", f"/api/jobs/{source['id']}/stems")
    assert first.status_code == 202 and again.status_code == 200 and first.json()["id"] == again.json()["id"]
    assert post(client, {"shifts": 2}, "stems-key", f"/api/jobs/{source['id']}/stems").status_code == 422
    assert len(client.get("/api/jobs").json()) == 2


def test_a_store_of_an_older_version_gains_the_new_columns(tmp_path):
    from tunesmith.server.store import Store

    db = sqlite3.connect(tmp_path / "jobs.sqlite3")
    db.executescript("""
        CREATE TABLE jobs (n INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, status TEXT NOT NULL,
            model TEXT NOT NULL, batch_key TEXT NOT NULL, rows INTEGER NOT NULL, spec TEXT NOT NULL,
            idempotency_key TEXT UNIQUE, seeds TEXT, timings TEXT, checks TEXT, files TEXT, sample_rate INTEGER,
            error TEXT, created_at REAL NOT NULL, started_at REAL, completed_at REAL, read_at REAL,
            runs INTEGER NOT NULL DEFAULT 0);
        INSERT INTO jobs (id, status, model, batch_key, rows, spec, idempotency_key, created_at)
            VALUES ('old', 'queued', 'm', 'k', 1, '{"prompt": "x"}', 'key', 1.0);
    """)
    db.commit()
    db.close()
    store = Store(tmp_path)
    try:
        old = store.get("old")
        assert old.spec == {"prompt": "x"} and old.fingerprint is None and old.digests == [] and old.warning is None
        assert store.by_key("key").id == "old"
    finally:
        store.close()
