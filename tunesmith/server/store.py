"""The server's job store: one SQLite file (WAL) under the data folder, audio files beside it.

Jobs live here, not in Python dicts, so that a restart (or a crash, or kill -9) loses none: a job that
was running is queued again and reruns with the same seed, and a job is marked done only after its
files are whole on disk (each written to a temporary name and renamed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import NoSpace, TunesmithError

log = logging.getLogger("tunesmith.server")

ACTIVE = ("queued", "running")
FINISHED = ("done", "error", "cancelled")
UNREAD_GRACE_S = 24 * 3600  # a finished job nobody has downloaded yet is kept at least this long
SQLITE_CORRUPT, SQLITE_FULL, SQLITE_NOTADB = 11, 13, 26  # SQLite's result codes (sqlite3 names them from 3.11)

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
    runs INTEGER NOT NULL DEFAULT 0,       -- times started (a rerun after a crash counts)
    fingerprint TEXT,                      -- of the request that brought the idempotency key
    digests TEXT,                          -- per file: size, mtime and SHA-256 when it was written
    warning TEXT                           -- one line: what of the request was ignored, and why
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


# Columns newer than the first stores: added to an older store when it is opened.
ADDED_COLUMNS = {"fingerprint": "TEXT", "digests": "TEXT", "warning": "TEXT"}


class QueueFull(TunesmithError):
    """add(max_active=n) found n jobs queued or running already."""


class StoreDamaged(TunesmithError):
    """The store's file is damaged (SQLite finds it corrupt, or not a database); the server answers 503."""


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
    fingerprint: str | None = None  # a hash of the request (route and body) that came with idempotency_key
    digests: list = field(default_factory=list)  # one per file (file_digest); empty for jobs of older versions
    warning: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        d = dict(row)
        d.pop("n")
        for key, empty in (("spec", {}), ("seeds", []), ("timings", {}), ("checks", []), ("files", []),
                           ("digests", [])):
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

    def __init__(self, folder: Path, repair: bool = False):
        self.folder = Path(folder)
        self.audio = self.folder / "audio"
        self.uploads = self.folder / "uploads"
        make_folders(self.folder)
        self._lock_file = _lock_folder(self.folder)
        sweep_leftovers(self.folder)  # the folder's lock says that no other server is writing them
        self._lock = threading.Lock()
        self._db = self._open(self.folder / "jobs.sqlite3", repair)
        self._add_columns()
        self.recover()

    def _open(self, path: Path, repair: bool) -> sqlite3.Connection:
        """The checked store; a damaged one is refused in one line or, with `repair`, kept aside for a fresh one
        (a damaged store would start and then answer 500 to everything)."""
        try:
            return _connect(path)
        except StoreDamaged as err:
            if not repair:
                raise StoreDamaged(f"the job store {path} is damaged ({err}): start once with --repair-store to keep "
                                   f"it as {path.name}.damaged-DATE and begin a fresh one, or give another --data"
                                   ) from None
            problem = str(err)
        kept = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
        path.replace(kept)
        wal = path.with_name(path.name + "-wal")
        if wal.exists():  # the damaged store's journal goes with it
            wal.replace(kept.with_name(kept.name + "-wal"))
        path.with_name(path.name + "-shm").unlink(missing_ok=True)
        log.warning("the job store %s was damaged (%s): kept as %s, starting a fresh one (its jobs are forgotten; "
                    "their audio stays in %s)", path, problem, kept, self.audio)
        return _connect(path)

    def close(self):
        with self._lock:
            self._db.close()
        if self._lock_file is not None:
            self._lock_file.close()

    @contextlib.contextmanager
    def _using(self, what: str = "write to the job store"):
        """The connection under the lock; SQLite's failures that a client can be told of become one line:
        a full disk is NoSpace ("cannot `what`"), a damaged file StoreDamaged."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.DatabaseError as err:
                failure = sqlite_failure(err, what)
                if failure is None:
                    raise
                raise failure from None

    def _run(self, sql: str, args=(), what: str = "write to the job store") -> "_Result":
        """One statement, its rows fetched under the lock (a cursor read later could interleave with
        another thread's statement on the shared connection)."""
        with self._using(what) as db:
            cursor = db.execute(sql, args)
            return _Result(cursor.fetchall(), cursor.rowcount)

    def _add_columns(self):
        """A store written by an older version gains the newer columns (empty for its jobs)."""
        have = {row["name"] for row in self._run("PRAGMA table_info(jobs)")}
        for name, kind in ADDED_COLUMNS.items():
            if name not in have:
                self._run(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    def recover(self) -> int:
        """Jobs left running by a crash are queued again: they rerun with the seed they were given."""
        return self._run("UPDATE jobs SET status='queued', started_at=NULL WHERE status='running'").rowcount

    # ---- jobs
    def add(self, job: Job, max_active: int | None = None) -> tuple[Job, bool]:
        """Store a new job -> (job, True); a job with the same idempotency key -> (that job, False);
        QueueFull if max_active jobs are queued or running (counted and inserted in one statement, so that
        requests at once cannot overfill the queue)."""
        marks = ",".join("?" * len(ACTIVE))
        try:
            added = self._run("INSERT INTO jobs (id, status, model, batch_key, rows, spec, idempotency_key, "
                              "created_at, fingerprint, warning) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
                              f"WHERE ? IS NULL OR (SELECT COUNT(*) FROM jobs WHERE status IN ({marks})) < ?",
                              (job.id, job.status, job.model, job.batch_key, job.rows, json.dumps(job.spec),
                               job.idempotency_key, job.created_at, job.fingerprint, job.warning, max_active,
                               *ACTIVE, max_active), what="store the job")
            if added.rowcount == 0:
                raise QueueFull(f"the queue is full ({max_active} jobs)")
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
        with self._using() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                first = db.execute("SELECT * FROM jobs WHERE status='queued' ORDER BY n LIMIT 1").fetchone()
                if first is None:
                    db.execute("COMMIT")
                    return []
                jobs, rows = [Job.from_row(first)], first["rows"]
                for r in db.execute("SELECT * FROM jobs WHERE status='queued' AND model=? AND batch_key=? "
                                    "AND n>? ORDER BY n", (first["model"], first["batch_key"], first["n"])):
                    if rows + r["rows"] > max_rows:
                        break
                    jobs.append(Job.from_row(r))
                    rows += r["rows"]
                now = time.time()
                for job in jobs:
                    db.execute("UPDATE jobs SET status='running', started_at=?, runs=runs+1 WHERE id=?",
                               (now, job.id))
                    job.status, job.started_at, job.runs = "running", now, job.runs + 1
                db.execute("COMMIT")
                return jobs
            except BaseException:
                if db.in_transaction:  # SQLite may have rolled back already (a full disk does)
                    db.execute("ROLLBACK")
                raise

    def finish(self, job_id: str, files: list[str], seeds: list[int], timings: dict, checks: list,
               sample_rate: int) -> bool:
        """Mark a running job done, once its files are on disk (each file's digest taken now, to tell a
        damaged one later)."""
        digests = [file_digest(self.audio / name) for name in files]
        return self._run("UPDATE jobs SET status='done', files=?, seeds=?, timings=?, checks=?, sample_rate=?, "
                         "digests=?, completed_at=?, error=NULL WHERE id=? AND status='running'",
                         (json.dumps(files), json.dumps(seeds), json.dumps(timings), json.dumps(checks),
                          sample_rate, json.dumps(digests), time.time(), job_id)).rowcount == 1

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
        try:
            self._run("UPDATE jobs SET read_at=? WHERE id=?", (time.time(), job_id))
        except NoSpace:  # only pruning reads it: a full disk must not stop downloads
            pass

    def delete(self, job_id: str) -> bool:
        """Delete a job that is not running, and its files."""
        with self._using("delete the job") as db:  # (DELETE ... RETURNING needs SQLite 3.35)
            row = db.execute("SELECT files FROM jobs WHERE id=? AND status!='running'", (job_id,)).fetchone()
            if row is None:
                return False
            db.execute("DELETE FROM jobs WHERE id=?", (job_id,))
        self._remove_files(job_id, json.loads(row["files"]) if row["files"] else [])
        return True

    def _remove_files(self, job_id: str, files: list[str]):
        remove_job_files(self.audio, job_id, files)

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
                   upload.channels), what="store the upload")

    def get_upload(self, upload_id: str) -> Upload | None:
        row = self._run("SELECT * FROM uploads WHERE id=?", (upload_id,)).fetchone()
        return Upload(**dict(row)) if row else None


def make_folders(folder: Path):
    """The data folder and its audio/ and uploads/, or one line saying why not."""
    try:
        for d in (folder, folder / "audio", folder / "uploads"):
            d.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TunesmithError(f"cannot use data folder {folder}: {err.strerror or err}") from None


def sweep_leftovers(folder: Path, older_than_s: float | None = None):
    """What a crash (kill -9) left half made: everything in tmp/ (downloads being converted), and the
    partial files of uploads and jobs (.NAME.partial.EXT: an upload being received, a clip or its
    ffmpeg source being written). With older_than_s, only what is that old: servers sharing the folder
    may be writing the younger ones."""
    stale = [*(folder / "tmp").glob("*"), *(folder / "uploads").glob(".*.partial*"),
             *(folder / "audio").glob(".*.partial*")]
    before = time.time() - older_than_s if older_than_s is not None else None
    for path in stale:
        try:
            if before is not None and path.lstat().st_mtime > before:
                continue
        except OSError:  # gone meanwhile
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def remove_job_files(audio: Path, job_id: str, files: list[str]):
    """A job's files, and any partial file of it a crash left."""
    for name in files:
        (audio / name).unlink(missing_ok=True)
    for stray in audio.glob(f".{job_id}-*"):
        stray.unlink(missing_ok=True)


def file_digest(path: Path) -> dict | None:
    """What tells a file as written from a damaged one: its size and mtime (cheap), its SHA-256 (sure)."""
    try:
        with open(path, "rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()
            stat = os.fstat(f.fileno())
    except OSError:  # not written (a test's job, a file already gone): nothing to compare with later
        return None
    return dict(size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256=sha)


def intact(path: Path, digest: dict | None) -> bool:
    """The file is as written: same size, and same mtime or else same content (a copy or a touch keeps
    the content). True when there is no digest to compare with (a job of an older version)."""
    if not digest:
        return True
    try:
        stat = path.stat()
        if stat.st_size != digest["size"]:
            return False
        if stat.st_mtime_ns == digest["mtime_ns"]:
            return True
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest() == digest["sha256"]
    except OSError:
        return False


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


def _connect(path: Path) -> sqlite3.Connection:
    """Open the store after SQLite's quick_check (it reads every page: milliseconds for a thousand jobs);
    damage raises StoreDamaged with SQLite's first word on it."""
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)  # transactions are explicit
    try:
        found = [row[0] for row in db.execute("PRAGMA quick_check")]
        if found != ["ok"]:
            lines = [line for row in found for line in row.splitlines() if not line.startswith("***")]
            raise StoreDamaged(lines[0] if lines else "quick_check failed")
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across a process crash
        db.executescript(SCHEMA)
        return db
    except sqlite3.DatabaseError as err:
        db.close()
        failure = sqlite_failure(err, "open the job store")
        if isinstance(failure, StoreDamaged):
            raise StoreDamaged(str(err)) from None
        if failure is not None:
            raise failure from None
        raise TunesmithError(f"cannot open the job store {path}: {err}") from None
    except StoreDamaged:
        db.close()
        raise


def sqlite_failure(err: sqlite3.DatabaseError, what: str) -> TunesmithError | None:
    """A full disk or a damaged file as one line (no path: clients read it); None for anything else."""
    code = getattr(err, "sqlite_errorcode", None)  # extended code (Python 3.11); older: the message only
    code = code & 0xFF if code is not None else None
    text = str(err)
    if code == SQLITE_FULL or "database or disk is full" in text:
        return NoSpace(f"the server's disk is full: cannot {what}")
    if code in (SQLITE_CORRUPT, SQLITE_NOTADB) or "malformed" in text or "not a database" in text:
        return StoreDamaged(f"the job store is damaged ({text}): restart the server, which checks it and says "
                            "what to do")
    return None


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
