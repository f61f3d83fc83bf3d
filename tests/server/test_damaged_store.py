"""A damaged job store: checked at start (refused in one line naming the file and what to do, or kept
aside with --repair-store), and reported by /api/health when it fails while serving."""

from __future__ import annotations

import re
import socket
import sqlite3
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.errors import TunesmithError
from tunesmith.server.store import Job, Store

from .test_full_disk import FullDisk


def store_with_jobs(folder: Path, count: int = 40) -> Path:
    store = Store(folder)
    for i in range(count):  # long specs: the jobs table spans many pages
        store.add(Job(f"job{i}", "queued", "m", "k", 1, {"prompt": f"{i} " * 800}, 0.0))
    store.close()  # the last connection checkpoints: the whole store is in the file
    return folder / "jobs.sqlite3"


def damage(db: Path, first_page: int = 2, pages: int = 4):
    """Overwrite whole pages with bytes no b-tree page holds (a torn write, a bad sector)."""
    size = int.from_bytes(db.read_bytes()[16:18], "big")
    assert db.stat().st_size >= (first_page + pages) * size
    with open(db, "r+b") as f:
        f.seek((first_page - 1) * size)
        f.write(bytes(range(256)) * (size * pages // 256))


def refusal(db: Path) -> str:
    return (f"the job store {db} is damaged: start once with --repair-store to keep it as "
            f"{db.name}.damaged-DATE and begin a fresh one, or give another --data")


def damage_cells(db: Path):
    """Overwrite the cell pointers of a page: quick_check answers with rows, not an error."""
    size = int.from_bytes(db.read_bytes()[16:18], "big")
    with open(db, "r+b") as f:
        f.seek(2 * size + 8)
        f.write(b"\xff" * 40)


@pytest.mark.parametrize("damaged", [damage, damage_cells])
def test_damaged_pages_refuse_to_start(tmp_path, damaged):
    db = store_with_jobs(tmp_path)
    damaged(db)
    with pytest.raises(TunesmithError) as caught:
        Store(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert re.fullmatch(re.escape(refusal(db)).replace(r"damaged:", r"damaged \(.+\):"), message), message


def test_a_damaged_header_names_the_file(tmp_path):
    db = store_with_jobs(tmp_path)
    with open(db, "r+b") as f:
        f.write(b"this is no longer an SQLite file!" * 3)
    with pytest.raises(TunesmithError) as caught:
        Store(tmp_path)
    assert str(caught.value) == refusal(db).replace("damaged:", "damaged (file is not a database):")


def test_repair_keeps_the_damaged_file_aside_and_starts_fresh(tmp_path, caplog):
    db = store_with_jobs(tmp_path)
    damage(db)
    damaged = db.read_bytes()
    with caplog.at_level("WARNING", logger="tunesmith.server"):
        store = Store(tmp_path, repair=True)
    try:
        assert store.count() == 0 and store.recent(10) == []
        store.add(Job("new", "queued", "m", "k", 1, {"prompt": "x"}, 0.0))
        assert store.get("new").status == "queued"
    finally:
        store.close()
    (kept,) = tmp_path.glob("jobs.sqlite3.damaged-*")
    assert re.fullmatch(r"jobs\.sqlite3\.damaged-\d{8}-\d{6}", kept.name) and kept.read_bytes() == damaged
    (said,) = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert str(kept) in said and "fresh" in said
    assert Store(tmp_path).count() == 1  # the fresh store is healthy on the next start


def test_a_healthy_store_is_not_moved_by_repair(tmp_path):
    store_with_jobs(tmp_path, 3)
    store = Store(tmp_path, repair=True)
    assert store.count() == 3 and not list(tmp_path.glob("*.damaged-*"))
    store.close()


def test_serve_refuses_in_one_line_and_repairs_on_request(mono_ckpt, tmp_path, capsys):
    db = store_with_jobs(tmp_path)
    damage(db)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    serve = ["serve", "-m", str(mono_ckpt[0]), "--data", str(tmp_path), "--port", str(taken.getsockname()[1])]
    try:
        assert main(serve) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith(f"tunesmith: error: the job store {db} is damaged (")
        assert main([*serve, "--repair-store"]) == 1  # repaired, then stopped by the port in use
    finally:
        taken.close()
    err = capsys.readouterr().err
    assert "cannot listen on" in err and len(list(tmp_path.glob("jobs.sqlite3.damaged-*"))) == 1


def test_health_reports_the_store(client_for, monkeypatch):
    client, app = client_for(start_worker=False)
    assert client.get("/api/health").json()["store"] == "ok"
    disk = FullDisk(app.state.store._db, refuses=("SELECT",))
    monkeypatch.setattr(app.state.store, "_db", disk)
    real = disk.execute

    def malformed(sql, args=()):
        try:
            return real(sql, args)
        except sqlite3.OperationalError:
            raise sqlite3.DatabaseError("database disk image is malformed") from None

    disk.execute = malformed
    res = client.get("/api/health")
    assert res.status_code == 503
    assert res.json()["store"].startswith("the job store is damaged (database disk image is malformed)")
    res = client.get("/api/jobs")
    assert res.status_code == 503 and res.json()["detail"].startswith("the job store is damaged")
