"""The job store on its own: recovery after a crash, claiming batches, pruning. Each test that takes
`store_url` runs against SQLite and against PostgreSQL (`-m cluster`): one contract, two backends."""

from __future__ import annotations

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.server.store import UNREAD_GRACE_S, Job, QueueFull, Store
from tunesmith.server.stores import open_store

from .conftest import wait_for

SHORT_LEASE_S = 0.5  # PostgreSQL: a crashed store's jobs come back this soon (SQLite: at the next open)


def job(job_id, key="k", rows=1, model="m", created=0.0, idem=None):
    return Job(job_id, "queued", model, key, rows, {"prompt": job_id}, created, idem)


def sql(store, text: str) -> str:
    """A statement in the store's placeholder style (SQLite ?, psycopg %s)."""
    return text if isinstance(store, Store) else text.replace("?", "%s")


def test_running_jobs_are_queued_again_after_a_crash(tmp_path, store_url):
    store = open_store(tmp_path, store_url, lease_s=SHORT_LEASE_S)
    for i in "abc":
        store.add(job(i))
    assert [j.id for j in store.claim(2)] == ["a", "b"]
    store.finish("a", ["a-0.wav"], [1], {}, [], 32000)
    store.close()  # as after kill -9: "b" was running, nothing was given back
    store = open_store(tmp_path, store_url, lease_s=SHORT_LEASE_S)

    def queued_again():  # SQLite: on open; PostgreSQL: once the dead store's lease ran out
        store.recover()
        return store.get("b").status == "queued"

    wait_for(queued_again, "b to be queued again")
    assert [store.get(i).status for i in "abc"] == ["done", "queued", "queued"]
    assert [j.id for j in store.claim(10)] == ["b", "c"] and store.get("b").runs == 2
    store.close()


def test_a_full_queue_refuses_a_new_job_but_not_a_repeated_key(tmp_path, store_url):
    store = open_store(tmp_path, store_url)
    store.add(job("a", idem="key-a"), max_active=2)
    store.add(job("b"), max_active=2)
    with pytest.raises(QueueFull):
        store.add(job("c"), max_active=2)
    assert store.get("c") is None and store.count() == 2
    assert store.add(job("a2", idem="key-a"))[0].id == "a"  # no limit given: the key's job comes back
    assert [j.id for j in store.claim(1)] == ["a"]
    store.finish("a", ["a-0.wav"], [1], {}, [], 32000)  # done jobs leave room
    assert store.add(job("c"), max_active=2)[1]
    store.close()


def test_one_server_per_data_folder(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(TunesmithError, match="another tunesmith serve is using"):
        Store(tmp_path)
    store.close()


def test_claim_batches_only_alike_jobs_up_to_the_row_limit(tmp_path, store_url):
    store = open_store(tmp_path, store_url)
    for i, key, rows, model in (("a", "x", 2, "m"), ("b", "y", 1, "m"), ("c", "x", 2, "n"), ("d", "x", 2, "m"),
                                ("e", "x", 1, "m")):
        store.add(job(i, key, rows, model))
    assert [j.id for j in store.claim(4)] == ["a", "d"]  # e would make 5 rows
    assert [j.id for j in store.claim(4)] == ["b"]
    assert [j.id for j in store.claim(4)] == ["c"]
    assert [j.id for j in store.claim(4)] == ["e"]
    assert store.claim(4) == []
    store.close()


def test_idempotency_key_gives_back_the_first_job(tmp_path, store_url):
    store = open_store(tmp_path, store_url)
    first, created = store.add(job("a", idem="key"))
    again, created_again = store.add(job("b", idem="key"))
    assert created and not created_again and again.id == "a" and store.get("b") is None
    assert store.by_key("key").id == "a"
    store.close()


def test_finish_fail_cancel_and_delete_only_from_the_right_state(tmp_path, store_url):
    store = open_store(tmp_path, store_url)
    for i in "abcd":
        store.add(job(i, key=i))
    assert store.cancel_queued("a") and store.get("a").status == "cancelled"
    assert not store.finish("a", ["a-0.wav"], [1], {}, [], 32000)  # a cancelled job stays cancelled
    assert [j.id for j in store.claim(1)] == ["b"]
    assert not store.cancel_queued("b") and not store.delete("b")  # running: neither
    assert store.finish("b", ["b-0.wav"], [7], {"x": 1}, [{"ok": True}], 32000)
    assert not store.fail("b", "too late")  # done stays done
    done = store.get("b")
    assert (done.status, done.files, done.seeds, done.timings, done.sample_rate) == ("done", ["b-0.wav"], [7],
                                                                                    {"x": 1}, 32000)
    assert store.fail("c", "bad input") and store.get("c").error == "bad input"
    assert [j.id for j in store.claim(1)] == ["d"]
    store.requeue("d")
    assert store.get("d").status == "queued" and store.count() == 1 and store.count(("done",)) == 1
    (store.audio / "b-0.wav").write_bytes(b"x")
    assert store.delete("b") and store.get("b") is None and not (store.audio / "b-0.wav").exists()
    store.close()


def test_prune_by_age_and_count_keeps_unread_for_a_day(tmp_path, store_url):
    store = open_store(tmp_path, store_url)
    now = 1_000_000.0
    for i in range(6):
        store.add(job(f"j{i}"))
        store.claim(1)
        (store.audio / f"j{i}-0.wav").write_bytes(b"x")
        store.finish(f"j{i}", [f"j{i}-0.wav"], [i], {}, [], 32000)
    ages = {"j0": 10 * 86400, "j1": 10 * 86400, "j2": 3600, "j3": 60, "j4": 60, "j5": 60}
    for i, age in ages.items():
        store._run(sql(store, "UPDATE jobs SET completed_at=? WHERE id=?"), (now - age, i))
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


def test_uploads_are_kept_and_pruned_with_their_file(tmp_path, store_url):
    from tunesmith.server.store import Upload

    store = open_store(tmp_path, store_url)
    path = store.uploads / "u1.wav"
    path.write_bytes(b"x")
    store.add_upload(Upload("u1", "take 1.wav", str(path), 100.0, 2.5, 44100, 2))
    assert store.get_upload("u1") == Upload("u1", "take 1.wav", str(path), 100.0, 2.5, 44100, 2)
    assert store.get_upload("u2") is None
    store.prune(max_age_s=50, max_jobs=10, now=200.0)
    assert store.get_upload("u1") is None and not path.exists()
    store.close()
