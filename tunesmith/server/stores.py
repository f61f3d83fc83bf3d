"""Which job store a server uses: SQLite in the data folder (one machine, the default) or PostgreSQL
(--store postgresql://..., shared by servers on several machines). Both keep audio in the data folder and
answer the same calls; the SQL of each stays in its own module."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from ..errors import InvalidParameter
from .store import ACTIVE, Job, Store, Upload

POSTGRES_SCHEMES = ("postgresql", "postgres")


class JobStore(Protocol):
    """What the routes and the worker use of a store."""

    folder: Path  # the data folder: audio/, uploads/, tmp/
    audio: Path
    uploads: Path

    def add(self, job: Job) -> tuple[Job, bool]: ...
    def get(self, job_id: str) -> Job | None: ...
    def by_key(self, key: str) -> Job | None: ...
    def recent(self, limit: int) -> list[Job]: ...
    def count(self, statuses=ACTIVE) -> int: ...
    def claim(self, max_rows: int) -> list[Job]: ...
    def finish(self, job_id: str, files: list[str], seeds: list[int], timings: dict, checks: list,
               sample_rate: int) -> bool: ...
    def fail(self, job_id: str, error: str, status: str = "error") -> bool: ...
    def requeue(self, job_id: str): ...
    def cancel_queued(self, job_id: str) -> bool: ...
    def mark_read(self, job_id: str): ...
    def delete(self, job_id: str) -> bool: ...
    def prune(self, max_age_s: float, max_jobs: int, now: float | None = None) -> int: ...
    def add_upload(self, upload: Upload): ...
    def get_upload(self, upload_id: str) -> Upload | None: ...
    def close(self): ...


def check_store_url(url: str | None) -> str | None:
    """None (SQLite in the data folder) or a postgresql:// address; anything else is one line."""
    if url is None:
        return None
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in POSTGRES_SCHEMES:
        shown = url.split("@")[-1][:100]  # never echo a password
        raise InvalidParameter(f"--store must be a postgresql://USER@HOST:PORT/DB address (leave it out for "
                               f"SQLite in --data), got {shown!r}")
    return url


def open_store(data: Path, url: str | None = None, repair: bool = False, lease_s: float | None = None) -> JobStore:
    """The store a server's settings name, opened (schema made or migrated, crashed jobs queued again)."""
    if check_store_url(url) is None:
        return Store(data, repair=repair)
    if repair:
        raise InvalidParameter("--repair-store is for the SQLite store in --data; PostgreSQL checks and repairs "
                               "its own files")
    from .store_postgres import LEASE_S, PostgresStore

    return PostgresStore(url, data, lease_s=LEASE_S if lease_s is None else lease_s)
