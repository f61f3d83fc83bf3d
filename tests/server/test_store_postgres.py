"""What only the PostgreSQL store has: leases shared by several servers, its schema version, a server
that cannot be reached. (What it shares with SQLite is proven in test_store.py, against both.)"""

from __future__ import annotations

import threading

import pytest

from tunesmith.errors import TunesmithError
from tunesmith.server.store import Job

from .conftest import wait_for
from .test_store import SHORT_LEASE_S, job

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture
def url(postgres, request):
    return postgres.new_database(f"pg_{request.node.name.lower()[:40]}")


def open_pg(tmp_path, url, lease_s=60.0):
    from tunesmith.server.store_postgres import PostgresStore

    return PostgresStore(url, tmp_path / "data", lease_s=lease_s)


def test_servers_sharing_a_store_never_claim_the_same_job(tmp_path, url):
    stores = [open_pg(tmp_path, url) for _ in range(2)]  # one data folder, as on a shared mount
    for i in range(40):
        stores[0].add(job(f"j{i:02d}", key=f"k{i}"))
    claimed = [[], []]

    def drain(k):
        while got := stores[k].claim(1):
            claimed[k] += [j.id for j in got]

    threads = [threading.Thread(target=drain, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed[0] + claimed[1]) == [f"j{i:02d}" for i in range(40)]
    assert not set(claimed[0]) & set(claimed[1])
    assert {stores[0].get(i).runs for i in claimed[0] + claimed[1]} == {1}
    for s in stores:
        s.close()


def test_servers_adding_at_once_never_overfill_the_queue(tmp_path, url):
    from tunesmith.server.store import QueueFull

    stores = [open_pg(tmp_path, url) for _ in range(4)]  # four ingress replicas
    added, refused = [], []

    def submit(k):
        for i in range(10):
            try:
                added.append(stores[k].add(job(f"s{k}-{i}"), max_active=7)[0].id)
            except QueueFull:
                refused.append(k)

    threads = [threading.Thread(target=submit, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(added) == 7 and len(refused) == 33 and stores[0].count() == 7
    for s in stores:
        s.close()


def test_a_live_servers_lease_is_kept_and_renewed(tmp_path, url):
    alive, other = open_pg(tmp_path, url), open_pg(tmp_path, url)
    alive.add(job("a"))
    assert [j.id for j in alive.claim(1)] == ["a"]
    assert other.recover() == 0 and other.claim(1) == []
    assert alive.renew() == 1 and other.renew() == 0  # each renews only its own
    other.requeue("a")  # not other's to give back
    assert alive.get("a").status == "running"
    alive.requeue("a")  # a stop gives it back
    assert [j.id for j in other.claim(1)] == ["a"] and other.get("a").runs == 2
    alive.close()
    other.close()


def test_a_dead_servers_job_runs_elsewhere_and_the_first_result_wins(tmp_path, url):
    dead, heir = open_pg(tmp_path, url, SHORT_LEASE_S), open_pg(tmp_path, url, SHORT_LEASE_S)
    dead.add(job("a"))
    dead.add(job("b"))
    assert [j.id for j in dead.claim(2)] == ["a", "b"]
    dead._closed.set()  # its process stalls: no more renewals (its connection stays)
    dead._renewer.join()
    reclaimed = wait_for(lambda: heir.claim(2), "the stalled server's leases to run out")
    assert [(j.id, j.runs) for j in reclaimed] == [("a", 2), ("b", 2)]
    # "a": the heir finishes first, the stalled server's late result changes nothing.
    assert heir.finish("a", ["a-0.wav"], [1], {"by": "heir"}, [], 32000)
    assert not dead.finish("a", ["a-0.wav"], [1], {"by": "dead"}, [], 32000)
    # "b": the stalled server wakes and stores first; the heir's result is refused.
    assert dead.finish("b", ["b-0.wav"], [2], {"by": "dead"}, [], 32000)
    assert not heir.finish("b", ["b-0.wav"], [2], {"by": "heir"}, [], 32000)
    assert [heir.get(i).timings["by"] for i in "ab"] == ["heir", "dead"]
    dead.close()
    heir.close()


def test_schema_is_versioned_and_a_newer_one_refused(tmp_path, url):
    import psycopg

    from tunesmith.server.store_postgres import MIGRATIONS

    open_pg(tmp_path, url).close()
    open_pg(tmp_path, url).close()  # opening again migrates nothing
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT version FROM tunesmith_schema").fetchall() == [(len(MIGRATIONS),)]
        conn.execute("UPDATE tunesmith_schema SET version=version+1")
    newer = rf"was made by a newer tunesmith \(schema {len(MIGRATIONS) + 1}, this one knows {len(MIGRATIONS)}\)"
    with pytest.raises(TunesmithError, match=newer):
        open_pg(tmp_path, url)


def test_texts_postgresql_refuses_are_kept_escaped(tmp_path, url):
    store = open_pg(tmp_path, url)
    store.add(Job("a", "queued", "m", "k", 1, {"prompt": "nul \x00 and \ud800"}, 0.0, warning="w \ud800"))
    assert store.fail("a", "broke at \x00 here \udcff")
    got = store.get("a")
    assert got.spec == {"prompt": "nul \x00 and \ud800"}  # JSON escapes both
    assert (got.error, got.warning) == ("broke at \\x00 here \\udcff", "w \\ud800")
    store.close()


def test_an_unreachable_server_is_one_line_without_the_password(tmp_path, postgres):
    from tunesmith.server.stores import open_store

    with pytest.raises(TunesmithError) as caught:
        open_store(tmp_path, "postgresql://someone:secret@127.0.0.1:1/jobs")
    text = str(caught.value)
    assert text.startswith("cannot open the job store postgresql://someone@127.0.0.1:1/jobs: ")
    assert "\n" not in text and "secret" not in text
    with pytest.raises(TunesmithError, match="--store must be a postgresql://USER@HOST:PORT/DB address"):
        open_store(tmp_path, "mysql://x:pw@host/db")
    with pytest.raises(TunesmithError, match="--repair-store is for the SQLite store"):
        open_store(tmp_path, postgres.url(), repair=True)


def test_a_store_of_schema_1_is_migrated_with_its_jobs(tmp_path, url):
    import psycopg

    from tunesmith.server.store_postgres import MIGRATIONS

    with psycopg.connect(url, autocommit=True) as conn:  # as the first version left it
        conn.execute(MIGRATIONS[0])
        conn.execute("CREATE TABLE tunesmith_schema (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO tunesmith_schema VALUES (1)")
        conn.execute("INSERT INTO jobs (id, status, model, batch_key, rows, spec, created_at) "
                     "VALUES ('old', 'queued', 'm', 'k', 1, '{\"prompt\": \"x\"}', 1.0)")
    store = open_pg(tmp_path, url)
    assert store.get("old").spec == {"prompt": "x"}
    assert [j.id for j in store.claim(1)] == ["old"] and store.progress_of("old") == (0, 0)
    store.close()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM tunesmith_schema").fetchall() == [(len(MIGRATIONS),)]


def test_progress_and_cancel_requests_reach_the_server_running_the_job(tmp_path, url):
    runner, ingress = open_pg(tmp_path, url, SHORT_LEASE_S), open_pg(tmp_path, url)
    for i in "abc":
        runner.add(job(i, key=i))
    assert [j.id for j in runner.claim(1)] == ["a"]
    assert ingress.progress_of("a") == (0, 0) and not ingress.cancel_requested("a")
    assert runner.sync_running({"a": (3, 10)}) == []
    assert ingress.progress_of("a") == (3, 10)
    assert ingress.sync_running({"a": (9, 10)}) == [] and ingress.progress_of("a") == (3, 10)  # not its job
    assert ingress.request_cancel("a") and ingress.cancel_requested("a")
    assert not ingress.request_cancel("b")  # queued: cancel_queued's, not this
    assert runner.sync_running({"a": (4, 10)}) == ["a"]
    # A server that dies before it sees the request: the job is cancelled, not run again.
    assert [j.id for j in runner.claim(1)] == ["b"]
    ingress.request_cancel("b")
    runner._closed.set()
    runner._renewer.join()

    def settled():
        ingress.recover()
        return ingress.get("b").status != "running"

    wait_for(settled, "b's lease to run out")
    assert (ingress.get("b").status, ingress.get("b").error) == ("cancelled", "cancelled")
    assert [j.id for j in ingress.claim(5)] == ["c"]
    runner.close()
    ingress.close()


def test_every_listening_server_hears_of_a_new_job(tmp_path, url):
    adder, listener = open_pg(tmp_path, url), open_pg(tmp_path, url)
    heard = threading.Event()
    listening = threading.Event()

    def on_new_job():
        if listening.is_set():
            heard.set()
        listening.set()  # the first call comes when it starts listening

    listener.listen(on_new_job)
    wait_for(listening.is_set, "the listener to start")
    adder.add(job("a"))
    wait_for(heard.is_set, "the notification")
    adder.close()
    listener.close()
