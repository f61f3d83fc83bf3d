"""The job store in PostgreSQL, for servers on several machines: the SQLite store's behaviour (store.py),
with jobs leased instead of held.

On one machine a running job belongs to the one worker, and a crash is known at the next start. Here any
number of processes share the store, and one that dies never says so: a worker claims jobs with a lease
(its owner token and a deadline on the database's clock, FOR UPDATE SKIP LOCKED so claimers never wait on
each other), a thread renews its leases while it lives, and a lease that runs out puts its job back in the
queue, to run again with its seed. The first result stored wins: finishing needs the job still running.

Audio stays in files under the data folder (every server must see the same folder); the schema is made
and migrated here, its version kept in tunesmith_schema.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import socket
import threading
import time
from pathlib import Path

from ..errors import InvalidParameter, NoSpace, TunesmithError
from .store import (ACTIVE, UNREAD_GRACE_S, Job, QueueFull, StoreDamaged, Upload, _Result, file_digest, make_folders,
                    remove_job_files, sweep_leftovers)

log = logging.getLogger("tunesmith.server")

LEASE_S = 30.0  # a claimed job returns to the queue this long after its worker stops renewing
LEFTOVER_AGE_S = 3600.0  # partial files older than this were left by a crash (others may be being written)
JOB_COLUMNS = ", ".join(f.name for f in dataclasses.fields(Job))
NOW = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"  # the database's clock: one for all machines

# Each entry brings the schema from its index to the next version; applied in order, never edited.
MIGRATIONS = [
    """
    CREATE TABLE jobs (
        n BIGSERIAL PRIMARY KEY,               -- submission order
        id TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,                  -- queued, running, done, error, cancelled
        model TEXT NOT NULL,
        batch_key TEXT NOT NULL,
        rows INTEGER NOT NULL,
        spec TEXT NOT NULL,                    -- JSON as text, exactly as the SQLite store keeps it
        idempotency_key TEXT UNIQUE,
        seeds TEXT, timings TEXT, checks TEXT, files TEXT,
        sample_rate INTEGER, error TEXT,
        created_at DOUBLE PRECISION NOT NULL, started_at DOUBLE PRECISION, completed_at DOUBLE PRECISION,
        read_at DOUBLE PRECISION,
        runs INTEGER NOT NULL DEFAULT 0,
        fingerprint TEXT, digests TEXT, warning TEXT,
        lease_owner TEXT,                      -- the store (process) running it
        lease_until DOUBLE PRECISION           -- seconds since the epoch, the database's clock
    );
    CREATE INDEX jobs_status ON jobs (status, n);
    CREATE TABLE uploads (
        id TEXT PRIMARY KEY,
        filename TEXT NOT NULL,
        path TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        seconds DOUBLE PRECISION NOT NULL, sample_rate INTEGER NOT NULL, channels INTEGER NOT NULL
    );
    """,
    # 2: what servers that do not run a job show of it and ask of it (a cluster's ingress replicas)
    """
    ALTER TABLE jobs ADD COLUMN progress_done INTEGER, ADD COLUMN progress_total INTEGER,
        ADD COLUMN cancel_requested BOOLEAN NOT NULL DEFAULT FALSE;
    """,
    # 3: the probe file each cluster replica wrote in the shared data folder (shared_folder.py)
    """
    CREATE TABLE probes (
        replica TEXT PRIMARY KEY,
        folder TEXT NOT NULL,                  -- the data folder, as the replicas were told it
        token TEXT NOT NULL,                   -- what the file holds
        host TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL           -- seconds since the epoch, the database's clock
    );
    """,
]
UNREACHABLE = "the job store (PostgreSQL) cannot be reached: try again shortly"  # clients read it: no address
NEW_JOB_CHANNEL = "tunesmith_new_job"
# A server that vanishes from the network (no refusal, no reset) is given up on in seconds, not the
# kernel's minutes: libpq's connect timeout, TCP keepalives and TCP_USER_TIMEOUT (ms).
CONNECT_OPTIONS = dict(connect_timeout=5, keepalives=1, keepalives_idle=5, keepalives_interval=2,
                       keepalives_count=3, tcp_user_timeout=10_000)
QUEUE_LOCK = 7_265_747  # held while a job is counted and added: ingress replicas at once cannot overfill the queue
MIGRATION_LOCK = 7_265_746  # pg_advisory_xact_lock key: servers starting together migrate one at a time


class StoreUnavailable(StoreDamaged):
    """PostgreSQL cannot be reached (restarting, network down): answered 503 as a damaged store is, and
    tried again on the next use."""


def shown_url(url: str) -> str:
    """The store's address without its password (it goes into logs and error lines)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(url)
    except Exception:
        return "postgresql://..."
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def clean_text(text: str | None) -> str | None:
    """A text PostgreSQL takes: no NUL, no lone surrogate (SQLite took both; each is kept visibly escaped)."""
    if text is None:
        return None
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


class PostgresStore:
    """The Store's methods on one connection under a lock (requests and the worker are threads of one
    process; other processes have their own), reconnected when PostgreSQL comes back."""

    def __init__(self, url: str, folder: Path, lease_s: float = LEASE_S):
        try:
            import psycopg  # noqa: F401  (the cluster extra)
        except ImportError:
            raise TunesmithError("a postgresql:// store needs psycopg: pip install 'tunesmith[cluster]'") from None
        if not lease_s > 0:
            raise InvalidParameter(f"the lease must be a positive number of seconds, got {lease_s}")
        self.url, self.lease_s = url, float(lease_s)
        self.shown = shown_url(url)
        self.folder = Path(folder)
        self.audio = self.folder / "audio"
        self.uploads = self.folder / "uploads"
        make_folders(self.folder)
        sweep_leftovers(self.folder, LEFTOVER_AGE_S)
        # This store's leases; says where a job runs (host and process) to whoever reads the table.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._lock = threading.Lock()
        self._conn = None
        try:
            self._connect()
        except StoreUnavailable as err:
            raise TunesmithError(f"cannot open the job store {self.shown}: {_first_line(err.__cause__ or err)}"
                                 ) from None
        try:
            self._migrate()
            self.recover()
        except BaseException:
            self._conn.close()
            raise
        self._closed = threading.Event()
        self._renewer = threading.Thread(target=self._renew_loop, name="tunesmith-leases", daemon=True)
        self._renewer.start()
        self._listener: threading.Thread | None = None

    # ---- the connection
    def _connect(self):
        import psycopg
        from psycopg.rows import dict_row

        try:
            self._conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row, **CONNECT_OPTIONS)
        except psycopg.OperationalError as err:
            self._conn = None
            raise StoreUnavailable(UNREACHABLE) from err

    def close(self):
        self._closed.set()
        self._renewer.join(5)
        if self._listener is not None:
            self._listener.join(5)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextlib.contextmanager
    def _using(self, what: str = "write to the job store"):
        """The connection under the lock (connecting again after a failure); a lost connection becomes
        StoreUnavailable, a full disk NoSpace ("cannot `what`")."""
        import psycopg

        with self._lock:
            if self._conn is None or self._conn.closed:
                self._connect()
            try:
                yield self._conn
            except psycopg.errors.DiskFull:
                raise NoSpace(f"the server's disk is full: cannot {what}") from None
            except (psycopg.OperationalError, psycopg.InterfaceError) as err:
                if not _connection_lost(self._conn, err):
                    raise
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
                log.warning("job store %s: %s", self.shown, _first_line(err))
                raise StoreUnavailable(UNREACHABLE) from err

    def _run(self, sql: str, args=(), what: str = "write to the job store") -> _Result:
        with self._using(what) as conn:
            cursor = conn.execute(sql, args)
            rows = cursor.fetchall() if cursor.description is not None else []
            return _Result(rows, cursor.rowcount)

    def _migrate(self):
        """Bring the schema to the newest version (one server at a time: an advisory lock)."""
        with self._using("create the job store's tables") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS tunesmith_schema (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM tunesmith_schema").fetchone()
            version = row["version"] if row else 0
            if version > len(MIGRATIONS):
                raise TunesmithError(f"the job store {self.shown} was made by a newer tunesmith (schema "
                                     f"{version}, this one knows {len(MIGRATIONS)}): upgrade tunesmith")
            for step in MIGRATIONS[version:]:
                conn.execute(step)
            if row is None:
                conn.execute("INSERT INTO tunesmith_schema (version) VALUES (%s)", (len(MIGRATIONS),))
            elif version < len(MIGRATIONS):
                conn.execute("UPDATE tunesmith_schema SET version=%s", (len(MIGRATIONS),))

    # ---- leases
    def _renew_loop(self):
        """Keep this store's leases alive while the process lives (a third of the lease apart: two
        renewals may fail before one runs out). A failure is said in the log and tried again."""
        while not self._closed.wait(self.lease_s / 3):
            try:
                self.renew()
            except Exception as err:
                log.warning("job store: leases not renewed (%s)", _first_line(err))

    def renew(self) -> int:
        """Push back the deadline of every job this store is running -> how many."""
        return self._run(f"UPDATE jobs SET lease_until={NOW} + %s WHERE lease_owner=%s AND status='running'",
                         (self.lease_s, self.owner)).rowcount

    def recover(self) -> int:
        """Running jobs whose lease ran out (their worker died) are queued again: they rerun with their
        seed (one someone asked to cancel is cancelled instead). Jobs of live workers are left alone
        (SKIP LOCKED: one being claimed is not waited for)."""
        return self._run("UPDATE jobs SET lease_owner=NULL, lease_until=NULL, started_at=CASE WHEN cancel_requested "
                         "THEN started_at END, status=CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END, "
                         "error=CASE WHEN cancel_requested THEN 'cancelled' END, completed_at=CASE WHEN "
                         "cancel_requested THEN %s END WHERE n IN (SELECT n FROM jobs WHERE status='running' AND "
                         f"lease_until < {NOW} FOR UPDATE SKIP LOCKED)", (time.time(),)).rowcount

    # ---- new jobs, told to every server at once
    def listen(self, on_new_job):
        """Call on_new_job() whenever any server adds a job (LISTEN/NOTIFY on a connection of its own), so that
        a worker in another process starts it at once instead of at its next look."""
        self._listener = threading.Thread(target=self._listen_loop, args=(on_new_job,), name="tunesmith-listen",
                                          daemon=True)
        self._listener.start()

    def _listen_loop(self, on_new_job):
        import psycopg

        while not self._closed.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, **CONNECT_OPTIONS) as conn:
                    conn.execute(f"LISTEN {NEW_JOB_CHANNEL}")
                    on_new_job()  # what was added while not listening
                    while not self._closed.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            on_new_job()
            except psycopg.Error as err:
                log.warning("job store: not listening for new jobs (%s)", _first_line(err))
                self._closed.wait(1.0)

    # ---- the shared folder's probes (shared_folder.py)
    def add_probe(self, replica: str, token: str, host: str):
        self._run(f"INSERT INTO probes (replica, folder, token, host, at) VALUES (%s, %s, %s, %s, {NOW}) "
                  f"ON CONFLICT (replica) DO UPDATE SET folder=EXCLUDED.folder, token=EXCLUDED.token, "
                  f"host=EXCLUDED.host, at=EXCLUDED.at", (replica, str(self.folder), token, host))

    def probes(self, max_age_s: float) -> list[dict]:
        """The probes written in this data folder in the last max_age_s -> [{replica, token, host}]."""
        return self._run(f"SELECT replica, token, host FROM probes WHERE folder=%s AND at > {NOW} - %s "
                         "ORDER BY at", (str(self.folder), max_age_s), "read the job store").rows

    def remove_probe(self, replica: str):
        self._run("DELETE FROM probes WHERE replica=%s", (replica,))

    # ---- running jobs seen from other servers (progress, cancel requests)
    def sync_running(self, progress: dict[str, tuple[int, int]]) -> list[str]:
        """Record the progress of the jobs this store runs -> the ids among them someone asked to cancel."""
        if progress:
            ids = list(progress)
            self._run("UPDATE jobs SET progress_done=p.done, progress_total=p.total FROM (SELECT UNNEST(%s::text[]) "
                      "AS id, UNNEST(%s::int[]) AS done, UNNEST(%s::int[]) AS total) AS p "
                      "WHERE jobs.id=p.id AND jobs.lease_owner=%s AND jobs.status='running'",
                      (ids, [progress[i][0] for i in ids], [progress[i][1] for i in ids], self.owner))
        return [r["id"] for r in self._run("SELECT id FROM jobs WHERE lease_owner=%s AND status='running' "
                                           "AND cancel_requested", (self.owner,))]

    def progress_of(self, job_id: str) -> tuple[int, int]:
        """(done, total) of a running job as its server last said, (0, 0) before it said."""
        row = self._run("SELECT progress_done, progress_total FROM jobs WHERE id=%s AND status='running'",
                        (job_id,)).fetchone()
        return (row["progress_done"] or 0, row["progress_total"] or 0) if row else (0, 0)

    def request_cancel(self, job_id: str) -> bool:
        """Ask whichever server runs the job to stop it (it looks every second)."""
        return self._run("UPDATE jobs SET cancel_requested=TRUE WHERE id=%s AND status='running'",
                         (job_id,)).rowcount == 1

    def cancel_requested(self, job_id: str) -> bool:
        row = self._run("SELECT cancel_requested FROM jobs WHERE id=%s AND status='running'", (job_id,)).fetchone()
        return bool(row and row["cancel_requested"])

    # ---- jobs
    def add(self, job: Job, max_active: int | None = None) -> tuple[Job, bool]:
        """Store a new job -> (job, True); a job with the same idempotency key -> (that job, False);
        QueueFull if max_active jobs are queued or running (counted under a lock every server takes)."""
        import psycopg

        try:
            with self._using("store the job") as conn, conn.transaction():
                if max_active is not None:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (QUEUE_LOCK,))
                    active = conn.execute("SELECT COUNT(*) AS c FROM jobs WHERE status = ANY(%s)",
                                          (list(ACTIVE),)).fetchone()["c"]
                    if active >= max_active:
                        raise QueueFull(f"the queue is full ({max_active} jobs)")
                conn.execute("INSERT INTO jobs (id, status, model, batch_key, rows, spec, idempotency_key, "
                             "created_at, fingerprint, warning) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                             (job.id, job.status, job.model, job.batch_key, job.rows, json.dumps(job.spec),
                              clean_text(job.idempotency_key), job.created_at, job.fingerprint,
                              clean_text(job.warning)))
            self._run(f"NOTIFY {NEW_JOB_CHANNEL}")
            return job, True
        except psycopg.errors.UniqueViolation:
            if job.idempotency_key is None:
                raise
            found = self.by_key(job.idempotency_key)
            if found is None:  # deleted meanwhile: try once more
                return self.add(job)
            return found, False

    def get(self, job_id: str) -> Job | None:
        row = self._run(f"SELECT n, {JOB_COLUMNS} FROM jobs WHERE id=%s", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def by_key(self, key: str) -> Job | None:
        row = self._run(f"SELECT n, {JOB_COLUMNS} FROM jobs WHERE idempotency_key=%s", (clean_text(key),)).fetchone()
        return Job.from_row(row) if row else None

    def recent(self, limit: int) -> list[Job]:
        return [Job.from_row(r) for r in self._run(f"SELECT n, {JOB_COLUMNS} FROM jobs ORDER BY n DESC LIMIT %s",
                                                   (limit,))]

    def count(self, statuses=ACTIVE) -> int:
        return self._run("SELECT COUNT(*) AS c FROM jobs WHERE status = ANY(%s)", (list(statuses),)).fetchone()["c"]

    def claim(self, max_rows: int) -> list[Job]:
        """The oldest queued job and the queued jobs that can share its batch (same model and key), up to
        max_rows clips in all, marked running under this store's lease. Rows another claimer holds are
        skipped, not waited for; jobs of dead workers are queued again first."""
        self.recover()
        with self._using() as conn, conn.transaction():
            first = conn.execute(f"SELECT n, {JOB_COLUMNS} FROM jobs WHERE status='queued' ORDER BY n LIMIT 1 "
                                 "FOR UPDATE SKIP LOCKED").fetchone()
            if first is None:
                return []
            jobs, rows = [Job.from_row(first)], first["rows"]
            mates = conn.execute(f"SELECT n, {JOB_COLUMNS} FROM jobs WHERE status='queued' AND model=%s AND "
                                 "batch_key=%s AND n>%s ORDER BY n LIMIT %s FOR UPDATE SKIP LOCKED",
                                 (first["model"], first["batch_key"], first["n"], max_rows)).fetchall()
            for r in mates:
                if rows + r["rows"] > max_rows:
                    break
                jobs.append(Job.from_row(r))
                rows += r["rows"]
            now = time.time()
            conn.execute(f"UPDATE jobs SET status='running', started_at=%s, runs=runs+1, lease_owner=%s, "
                         f"lease_until={NOW} + %s, progress_done=NULL, progress_total=NULL WHERE id = ANY(%s)",
                         (now, self.owner, self.lease_s, [j.id for j in jobs]))
            for job in jobs:
                job.status, job.started_at, job.runs = "running", now, job.runs + 1
            return jobs

    def finish(self, job_id: str, files: list[str], seeds: list[int], timings: dict, checks: list,
               sample_rate: int) -> bool:
        """Mark a running job done, once its files are on disk. The first result stored wins: a worker
        whose lease ran out and whose job another finished first changes nothing."""
        digests = [file_digest(self.audio / name) for name in files]
        return self._run("UPDATE jobs SET status='done', files=%s, seeds=%s, timings=%s, checks=%s, sample_rate=%s, "
                         "digests=%s, completed_at=%s, error=NULL, lease_owner=NULL, lease_until=NULL "
                         "WHERE id=%s AND status='running'",
                         (json.dumps(files), json.dumps(seeds), json.dumps(timings), json.dumps(checks),
                          sample_rate, json.dumps(digests), time.time(), job_id)).rowcount == 1

    def fail(self, job_id: str, error: str, status: str = "error") -> bool:
        """Mark an active job failed or cancelled with a one-line reason."""
        return self._run("UPDATE jobs SET status=%s, error=%s, completed_at=%s, lease_owner=NULL, lease_until=NULL "
                         "WHERE id=%s AND status IN ('queued', 'running')",
                         (status, clean_text(error), time.time(), job_id)).rowcount == 1

    def requeue(self, job_id: str):
        """Give back a job this store is running (a stop cut it short); one another worker has since
        claimed is theirs."""
        self._run("UPDATE jobs SET status='queued', started_at=NULL, lease_owner=NULL, lease_until=NULL "
                  "WHERE id=%s AND status='running' AND lease_owner=%s", (job_id, self.owner))

    def cancel_queued(self, job_id: str) -> bool:
        """A queued job becomes cancelled at once (workers claim only queued jobs: it never runs)."""
        return self._run("UPDATE jobs SET status='cancelled', error='cancelled', completed_at=%s "
                         "WHERE id=%s AND status='queued'", (time.time(), job_id)).rowcount == 1

    def mark_read(self, job_id: str):
        try:
            self._run("UPDATE jobs SET read_at=%s WHERE id=%s", (time.time(), job_id))
        except NoSpace:  # only pruning reads it: a full disk must not stop downloads
            pass

    def delete(self, job_id: str) -> bool:
        """Delete a job that is not running, and its files."""
        row = self._run("DELETE FROM jobs WHERE id=%s AND status!='running' RETURNING files", (job_id,),
                        what="delete the job").fetchone()
        if row is None:
            return False
        remove_job_files(self.audio, job_id, json.loads(row["files"]) if row["files"] else [])
        return True

    def prune(self, max_age_s: float, max_jobs: int, now: float | None = None) -> int:
        """Delete finished jobs older than max_age_s, and the oldest beyond max_jobs finished ones; a done
        job that nobody has downloaded is kept for UNREAD_GRACE_S after it finished whatever the limits."""
        now = time.time() if now is None else now
        keep = "NOT (status='done' AND read_at IS NULL AND completed_at > %s)"
        rows = self._run(f"DELETE FROM jobs WHERE status IN ('done', 'error', 'cancelled') AND {keep} "
                         "AND (completed_at < %s OR n NOT IN (SELECT n FROM jobs WHERE status IN "
                         "('done', 'error', 'cancelled') ORDER BY n DESC LIMIT %s)) RETURNING id, files",
                         (now - UNREAD_GRACE_S, now - max_age_s, max_jobs), what="prune old jobs").fetchall()
        for row in rows:
            remove_job_files(self.audio, row["id"], json.loads(row["files"]) if row["files"] else [])
        for row in self._run("DELETE FROM uploads WHERE created_at < %s RETURNING path", (now - max_age_s,)):
            Path(row["path"]).unlink(missing_ok=True)
        sweep_leftovers(self.folder, LEFTOVER_AGE_S)
        return len(rows)

    # ---- uploads
    def add_upload(self, upload: Upload):
        self._run("INSERT INTO uploads (id, filename, path, created_at, seconds, sample_rate, channels) "
                  "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                  (upload.id, clean_text(upload.filename), clean_text(upload.path), upload.created_at, upload.seconds,
                   upload.sample_rate, upload.channels), what="store the upload")

    def get_upload(self, upload_id: str) -> Upload | None:
        row = self._run("SELECT id, filename, path, created_at, seconds, sample_rate, channels FROM uploads "
                        "WHERE id=%s", (upload_id,)).fetchone()
        return Upload(**row) if row else None


def _connection_lost(conn, err: Exception) -> bool:
    """The connection is gone (the server shut down, crashed or cannot be reached), not a statement refused."""
    import psycopg

    return conn is None or conn.closed or conn.broken or isinstance(
        err, (psycopg.errors.AdminShutdown, psycopg.errors.CrashShutdown, psycopg.errors.CannotConnectNow))


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
