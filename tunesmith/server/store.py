"""The server's job store: one SQLite file (WAL) under the data folder, audio files beside it.

Jobs live here, not in Python dicts, so that a restart (or a crash, or kill -9) loses none: a job that
was running is queued again and reruns with the same seed, and a job is marked done only after its
files are whole on disk (each written to a temporary name and renamed).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TunesmithError

ACTIVE = ("queued", "running")
FINISHED = ("done", "error", "cancelled")
UNREAD_GRACE_S = 24 * 3600  # a finished job nobody has downloaded yet is kept at least this long

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    n INTEGER PRIMARY KEY AUTOINCREMENT,   -- submission order
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,                  -- queued, running, done, error, cancelled
    model TEXT NOT NULL,                   -- a registered model name
    batch_key TEXT NOT NULL,               -- jobs with equal keys (and model) may share one batch
    rows INTEGER NOT NULL,                 -- clips the job makes (its variations)
    spec TEXT NOT NULL,                    -- the checked request as JSON (seed included)
    idempotency_key TEXT UNIQUE,
    seeds TEXT, timings TEXT, checks TEXT, files TEXT,
    sample_rate INTEGER, error TEXT,
    created_at REAL NOT NULL, started_at REAL, completed_at REAL, read_at REAL,
    runs INTEGER NOT NULL DEFAULT 0        -- times started (a rerun after a crash counts)
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, n);
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    path TEXT NOT NULL,
    created_at REAL NOT NULL,
    seconds REAL NOT NULL, sample_rate INTEGER NOT NULL, channels INTEGER NOT NULL
);
"""


def new_id() -> str:
    """A random id (96 bits): unguessable, so one client cannot walk through another's jobs."""
    return secrets.token_urlsafe(12)


@dataclass
class Job:
    id: str
    status: str
    model: str
    batch_key: str
    rows: int
    spec: dict
    created_at: float
    idempotency_key: str | None = None
    seeds: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    checks: list = field(default_factory=list)
    files: list = field(default_factory=list)  # file names in the audio folder, one per clip
    sample_rate: int | None = None
    error: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    read_at: float | None = None
    runs: int = 0

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        d = dict(row)
        d.pop("n")
        for key, empty in (("spec", {}), ("seeds", []), ("timings", {}), ("checks", []), ("files", [])):
            d[key] = json.loads(d[key]) if d[key] else empty
        return cls(**d)


@dataclass
class Upload:
    id: str
    filename: str
    path: str
    created_at: float
    seconds: float
    sample_rate: int
    channels: int


class Store:
    """All access goes through one connection under a lock: requests and the worker are threads of one
    process, and SQLite serialises writers anyway."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.audio = self.folder / "audio"
        self.uploads = self.folder / "uploads"
        try:
            for d in (self.folder, self.audio, self.uploads):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TunesmithError(f"cannot use data folder {self.folder}: {err.strerror or err}") from None
        self._lock_file = _lock_folder(self.folder)
        self._sweep()
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.folder / "jobs.sqlite3"), check_same_thread=False,
                                   isolation_level=None)  # autocommit; transactions are explicit
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across a process crash
        self._db.executescript(SCHEMA)
        self.recover()

    def _sweep(self):
        """What a crash (kill -9) left half made: everything in tmp/ (downloads being converted), and the
        partial files of uploads and jobs (.NAME.partial.EXT: an upload being received, a clip or its
        ffmpeg source being written). The folder's lock says that no other server is writing them."""
        stale = [*(self.folder / "tmp").glob("*"), *self.uploads.glob(".*.partial*"), *self.audio.glob(".*.partial*")]
        for path in stale:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def close(self):
        with self._lock:
            self._db.close()
        if self._lock_file is not None:
            self._lock_file.close()

    def _run(self, sql: str, args=()) -> "_Result":
        """One statement, its rows fetched under the lock (a cursor read later could interleave with
        another thread's statement on the shared connection)."""
        with self._lock:
            cursor = self._db.execute(sql, args)
            return _Result(cursor.fetchall(), cursor.rowcount)

    def recover(self) -> int:
        """Jobs left running by a crash are queued again: they rerun with the seed they were given."""
        return self._run("UPDATE jobs SET status='queued', started_at=NULL WHERE status='running'").rowcount

    # ---- jobs
    def add(self, job: Job) -> tuple[Job, bool]:
        """Store a new job -> (job, True); a job with the same idempotency key -> (that job, False)."""
        try:
            self._run("INSERT INTO jobs (id, status, model, batch_key, rows, spec, idempotency_key, created_at) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      (job.id, job.status, job.model, job.batch_key, job.rows, json.dumps(job.spec),
                       job.idempotency_key, job.created_at))
            return job, True
        except sqlite3.IntegrityError:
            if job.idempotency_key is None:
                raise
            row = self._run("SELECT * FROM jobs WHERE idempotency_key=?", (job.idempotency_key,)).fetchone()
            if row is None:  # deleted meanwhile: try once more
                return self.add(job)
            return Job.from_row(row), False

    def get(self, job_id: str) -> Job | None:
        row = self._run("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def by_key(self, key: str) -> Job | None:
        row = self._run("SELECT * FROM jobs WHERE idempotency_key=?", (key,)).fetchone()
        return Job.from_row(row) if row else None

    def recent(self, limit: int) -> list[Job]:
        return [Job.from_row(r) for r in self._run("SELECT * FROM jobs ORDER BY n DESC LIMIT ?", (limit,))]

    def count(self, statuses=ACTIVE) -> int:
        marks = ",".join("?" * len(statuses))
        return self._run(f"SELECT COUNT(*) FROM jobs WHERE status IN ({marks})", statuses).fetchone()[0]

    def claim(self, max_rows: int) -> list[Job]:
        """The oldest queued job and the queued jobs that can share its batch (same model and key), up to
        max_rows clips in all, marked running."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                first = self._db.execute("SELECT * FROM jobs WHERE status='queued' ORDER BY n LIMIT 1").fetchone()
                if first is None:
                    self._db.execute("COMMIT")
                    return []
                jobs, rows = [Job.from_row(first)], first["rows"]
                for r in self._db.execute("SELECT * FROM jobs WHERE status='queued' AND model=? AND batch_key=? "
                                          "AND n>? ORDER BY n", (first["model"], first["batch_key"], first["n"])):
                    if rows + r["rows"] > max_rows:
                        break
                    jobs.append(Job.from_row(r))
                    rows += r["rows"]
                now = time.time()
                for job in jobs:
                    self._db.execute("UPDATE jobs SET status='running', started_at=?, runs=runs+1 WHERE id=?",
                                     (now, job.id))
                    job.status, job.started_at, job.runs = "running", now, job.runs + 1
                self._db.execute("COMMIT")
                return jobs
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def finish(self, job_id: str, files: list[str], seeds: list[int], timings: dict, checks: list,
               sample_rate: int) -> bool:
        """Mark a running job done, once its files are on disk."""
        return self._run("UPDATE jobs SET status='done', files=?, seeds=?, timings=?, checks=?, sample_rate=?, "
                         "completed_at=?, error=NULL WHERE id=? AND status='running'",
                         (json.dumps(files), json.dumps(seeds), json.dumps(timings), json.dumps(checks),
                          sample_rate, time.time(), job_id)).rowcount == 1

    def fail(self, job_id: str, error: str, status: str = "error") -> bool:
        """Mark an active job failed or cancelled with a one-line reason."""
        return self._run("UPDATE jobs SET status=?, error=?, completed_at=? WHERE id=? AND status IN "
                         "('queued', 'running')", (status, error, time.time(), job_id)).rowcount == 1

    def requeue(self, job_id: str):
        self._run("UPDATE jobs SET status='queued', started_at=NULL WHERE id=? AND status='running'", (job_id,))

    def cancel_queued(self, job_id: str) -> bool:
        """A queued job becomes cancelled at once (the worker claims only queued jobs: it never runs)."""
        return self._run("UPDATE jobs SET status='cancelled', error='cancelled', completed_at=? "
                         "WHERE id=? AND status='queued'", (time.time(), job_id)).rowcount == 1

    def mark_read(self, job_id: str):
        self._run("UPDATE jobs SET read_at=? WHERE id=?", (time.time(), job_id))

    def delete(self, job_id: str) -> bool:
        """Delete a job that is not running, and its files."""
        with self._lock:  # (DELETE ... RETURNING needs SQLite 3.35)
            row = self._db.execute("SELECT files FROM jobs WHERE id=? AND status!='running'", (job_id,)).fetchone()
            if row is None:
                return False
            self._db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
        self._remove_files(job_id, json.loads(row["files"]) if row["files"] else [])
        return True

    def _remove_files(self, job_id: str, files: list[str]):
        for name in files:
            (self.audio / name).unlink(missing_ok=True)
        for stray in self.audio.glob(f".{job_id}-*"):  # a partial file left by a crash
            stray.unlink(missing_ok=True)

    def prune(self, max_age_s: float, max_jobs: int, now: float | None = None) -> int:
        """Delete finished jobs older than max_age_s, and the oldest beyond max_jobs finished ones; a done
        job that nobody has downloaded is kept for UNREAD_GRACE_S after it finished whatever the limits."""
        now = time.time() if now is None else now
        keep = "NOT (status='done' AND read_at IS NULL AND completed_at > ?)"
        rows = self._run(f"SELECT id, files FROM jobs WHERE status IN ('done', 'error', 'cancelled') AND {keep} "
                         "AND (completed_at < ? OR n NOT IN (SELECT n FROM jobs WHERE status IN "
                         "('done', 'error', 'cancelled') ORDER BY n DESC LIMIT ?))",
                         (now - UNREAD_GRACE_S, now - max_age_s, max_jobs)).fetchall()
        for row in rows:
            if self._run("DELETE FROM jobs WHERE id=? AND status!='running'", (row["id"],)).rowcount:
                self._remove_files(row["id"], json.loads(row["files"]) if row["files"] else [])
        for row in self._run("SELECT id, path FROM uploads WHERE created_at < ?", (now - max_age_s,)).fetchall():
            self._run("DELETE FROM uploads WHERE id=?", (row["id"],))
            Path(row["path"]).unlink(missing_ok=True)
        return len(rows)

    # ---- uploads
    def add_upload(self, upload: Upload):
        self._run("INSERT INTO uploads VALUES (?, ?, ?, ?, ?, ?, ?)",
                  (upload.id, upload.filename, upload.path, upload.created_at, upload.seconds, upload.sample_rate,
                   upload.channels))

    def get_upload(self, upload_id: str) -> Upload | None:
        row = self._run("SELECT * FROM uploads WHERE id=?", (upload_id,)).fetchone()
        return Upload(**dict(row)) if row else None


@dataclass
class _Result:
    rows: list
    rowcount: int

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list:
        return self.rows

    def __iter__(self):
        return iter(self.rows)


def _lock_folder(folder: Path):
    """One server per data folder: two would run each other's jobs. (No lock where fcntl is missing.)"""
    try:
        import fcntl
    except ImportError:
        return None
    handle = open(folder / "server.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise TunesmithError(f"another tunesmith serve is using {folder}: stop it, or give another --data") from None
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
