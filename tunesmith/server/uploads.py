"""POST /api/uploads: the multipart body streamed to a file under the data folder chunk by chunk while its
bytes are counted (never held whole in memory), then probed from disk block by block, and a cap on the
uploads received at once."""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from fastapi.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request

from ..errors import InvalidParameter, NoSpace, TooLong, TunesmithError
from ..request import text_problem
from .guard import UPLOAD_SLACK, upload_too_large
from .registry import Registry
from .settings import ServerSettings
from .spec import Limits
from .store import Store, Upload, new_id

UPLOAD_MARGIN_S = 60.0  # past the longest audio a model takes: a song a little longer is cut, not refused
RETRY_AFTER_S = 5
FIELD = "file"

# The body OpenAPI shows (the route reads the stream itself, so FastAPI cannot infer it).
OPENAPI_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": [FIELD], "properties": {FIELD: {
        "type": "string", "format": "binary",
        "description": "an audio file (WAV, FLAC, MP3, OGG, M4A, ...)"}}}}}}}


def longest_upload(registry: Registry, limits: Limits) -> float:
    """Seconds an upload may last: the longest audio a served model takes (a MusicGen continuation, melody
    or style reference as long as the server's longest job; Stable Audio's init audio and ACE-Step's song
    as the model's longest clip) plus a margin. Its use is not known yet, so the longest use counts."""
    return max(e.spec.longest or limits.max_duration for e in registry.entries.values()) + UPLOAD_MARGIN_S


class UploadSlots:
    """At most `size` uploads received at once: each holds a file being written and, while it is probed,
    a decoder; one past the cap is answered 429 at once rather than queued."""

    def __init__(self, size: int):
        self.size, self.taken = size, 0
        self._lock = threading.Lock()

    @contextmanager
    def slot(self):
        with self._lock:
            if self.taken >= self.size:
                raise HTTPException(429, f"{self.size} uploads are being received: try again shortly",
                                    headers={"Retry-After": str(RETRY_AFTER_S)})
            self.taken += 1
        try:
            yield
        finally:
            with self._lock:
                self.taken -= 1


async def receive_upload(request: Request, store: Store, settings: ServerSettings, max_seconds: float) -> dict:
    """Stream the form's file to a partial file in the uploads folder, probe it, and record it."""
    upload_id = new_id()
    form = _FileForm(request.headers.get("content-type", ""), store.uploads, upload_id)
    limit, size = settings.upload_limit + UPLOAD_SLACK, 0
    try:
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, upload_too_large(settings))
                await run_in_threadpool(form.write, chunk)
        except ClientDisconnect:
            raise HTTPException(400, "the upload was cut off before its end") from None
        await run_in_threadpool(form.finish)
        problem = text_problem(form.filename)
        if problem:  # stored and shown to clients: checked as the bodies' texts are
            raise HTTPException(422, f"the upload's file name {problem}")
        return await run_in_threadpool(_record, store, form, upload_id, max_seconds)
    finally:
        form.close()


def _record(store: Store, form: "_FileForm", upload_id: str, max_seconds: float) -> dict:
    """Probe the received file (header first, then block by block) and keep it under its id."""
    from ..audio.io import probe_audio
    from ..request import FRAME_SECONDS

    try:
        info = probe_audio(form.partial, max_seconds, "the upload")
    except TooLong:
        raise
    except TunesmithError:
        raise InvalidParameter("the upload is not an audio file tunesmith can read") from None
    if info.seconds < FRAME_SECONDS:
        raise InvalidParameter(f"the upload lasts {info.seconds * 1000:.1f} ms: less than one frame "
                               f"({FRAME_SECONDS * 1000:g} ms)")
    if not info.finite:
        raise InvalidParameter("the upload holds NaN or infinite samples")
    path = store.uploads / f"{upload_id}{form.suffix}"
    try:
        os.replace(form.partial, path)
    except OSError as err:
        raise _write_error(err) from None
    try:
        store.add_upload(Upload(upload_id, form.filename, str(path), time.time(), info.seconds, info.sample_rate,
                                info.channels))
    except BaseException:  # not recorded (a full disk: 507): its file would be an orphan
        path.unlink(missing_ok=True)
        raise
    return dict(id=upload_id, filename=form.filename, seconds=info.seconds, sample_rate=info.sample_rate,
                channels=info.channels)


class _FileForm:
    """A multipart/form-data parser that writes the part named `file` to a partial file as it arrives
    (`.ID.partial.EXT` in `folder`, swept at the next start if the server dies first) and drops the rest."""

    def __init__(self, content_type: str, folder: Path, upload_id: str):
        from python_multipart.multipart import MultipartParser, parse_options_header

        kind, options = parse_options_header(content_type)
        if kind != b"multipart/form-data" or not options.get(b"boundary"):
            raise _no_file()
        self.folder, self.upload_id = folder, upload_id
        self.partial: Path | None = None
        self.filename, self.suffix = "upload", ".audio"
        self._out = None
        self._in_file = self._done = False
        self._header, self._headers = [b"", b""], {}
        self._parser = MultipartParser(options[b"boundary"], {
            "on_part_begin": self._begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._data, "on_part_end": self._end})

    def write(self, chunk: bytes):
        try:
            self._parser.write(chunk)
        except TunesmithError:
            raise
        except OSError as err:
            raise _write_error(err) from None
        except Exception:  # python-multipart's FormParserError and its kin: the body is not a form
            raise InvalidParameter("the upload is not valid multipart/form-data") from None

    def finish(self):
        if self.partial is None or not self._done:
            raise _no_file()

    def close(self):
        if self._out is not None:
            self._out.close()
        if self.partial is not None:
            self.partial.unlink(missing_ok=True)  # kept only once renamed

    # ---- the parser's callbacks
    def _begin(self):
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int):
        self._header[0] += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int):
        self._header[1] += data[start:end]

    def _header_end(self):
        self._headers[self._header[0].lower()] = self._header[1]
        self._header = [b"", b""]

    def _headers_finished(self):
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._in_file = options.get(b"name") == FIELD.encode() and b"filename" in options and self.partial is None
        if self._in_file:
            self.filename = options[b"filename"].decode("utf-8", "replace")[:200] or "upload"
            suffix = Path(self.filename).suffix.lower()
            self.suffix = suffix if re.match(r"^\.[a-z0-9]{1,5}$", suffix) else ".audio"
            self.partial = self.folder / f".{self.upload_id}.partial{self.suffix}"
            self._out = open(self.partial, "wb")

    def _data(self, data: bytes, start: int, end: int):
        if self._in_file:
            self._out.write(data[start:end])

    def _end(self):
        if self._in_file:
            self._out.close()
            self._out, self._in_file, self._done = None, False, True


def _no_file() -> HTTPException:  # 422, as a missing field of a validated body
    return HTTPException(422, f"{FIELD}: an audio file is required, as the multipart/form-data field '{FIELD}'")


def _write_error(err: OSError) -> TunesmithError:
    reason = err.strerror or str(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"cannot store the upload: {reason}")
    return TunesmithError(f"cannot store the upload: {reason}")
