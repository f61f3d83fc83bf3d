"""The job store on its own: recovery after a crash, claiming batches, pruning."""

from __future__ import annotations

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.server.store import UNREAD_GRACE_S, Job, Store


def job(job_id, key="k", rows=1, model="m", created=0.0, idem=None):
    return Job(job_id, "queued", model, key, rows, {"prompt": job_id}, created, idem)


def test_running_jobs_are_queued_again_on_open(tmp_path):
    store = Store(tmp_path)
    for i in "abc":
        store.add(job(i))
    assert [j.id for j in store.claim(2)] == ["a", "b"]
    store.finish("a", ["a-0.wav"], [1], {}, [], 32000)
    store.close()
    store = Store(tmp_path)  # as after kill -9: "b" was running
    assert [store.get(i).status for i in "abc"] == ["done", "queued", "queued"]
    assert [j.id for j in store.claim(10)] == ["b", "c"] and store.get("b").runs == 2
    store.close()


def test_one_server_per_data_folder(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(TunesmithError, match="another tunesmith serve is using"):
        Store(tmp_path)
    store.close()


def test_claim_batches_only_alike_jobs_up_to_the_row_limit(tmp_path):
    store = Store(tmp_path)
    for i, key, rows, model in (("a", "x", 2, "m"), ("b", "y", 1, "m"), ("c", "x", 2, "n"), ("d", "x", 2, "m"),
                                ("e", "x", 1, "m")):
        store.add(job(i, key, rows, model))
    assert [j.id for j in store.claim(4)] == ["a", "d"]  # e would make 5 rows
    assert [j.id for j in store.claim(4)] == ["b"]
    assert [j.id for j in store.claim(4)] == ["c"]
    assert [j.id for j in store.claim(4)] == ["e"]
    assert store.claim(4) == []
    store.close()


def test_idempotency_key_gives_back_the_first_job(tmp_path):
    store = Store(tmp_path)
    first, created = store.add(job("a", idem="key"))
    again, created_again = store.add(job("b", idem="key"))
    assert created and not created_again and again.id == "a" and store.get("b") is None
    store.close()


def test_prune_by_age_and_count_keeps_unread_for_a_day(tmp_path):
    store = Store(tmp_path)
    now = 1_000_000.0
    for i in range(6):
        store.add(job(f"j{i}"))
        store.claim(1)
        (store.audio / f"j{i}-0.wav").write_bytes(b"x")
        store.finish(f"j{i}", [f"j{i}-0.wav"], [i], {}, [], 32000)
    ages = {"j0": 10 * 86400, "j1": 10 * 86400, "j2": 3600, "j3": 60, "j4": 60, "j5": 60}
    with store._lock:
        for i, age in ages.items():
            store._db.execute("UPDATE jobs SET completed_at=? WHERE id=?", (now - age, i))
    for i in ("j0", "j2", "j3"):
        store.mark_read(i)
    store.prune(max_age_s=7 * 86400, max_jobs=3, now=now)
    left = sorted(j.id for j in store.recent(10))
    # j0: read and old -> gone; j1: old and never read -> gone (its grace day is long over);
    # j2: read, beyond the newest 3 -> gone; j3..j5 the newest three stay.
    assert left == ["j3", "j4", "j5"]
    assert sorted(p.name for p in store.audio.iterdir()) == ["j3-0.wav", "j4-0.wav", "j5-0.wav"]
    # Unread jobs younger than a day survive even the count limit; j3 was read.
    store.prune(max_age_s=7 * 86400, max_jobs=1, now=now)
    assert sorted(j.id for j in store.recent(10)) == ["j4", "j5"]
    store.prune(max_age_s=7 * 86400, max_jobs=1, now=now + UNREAD_GRACE_S)
    assert [j.id for j in store.recent(10)] == ["j5"]
    store.close()
