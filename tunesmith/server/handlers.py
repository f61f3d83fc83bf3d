"""Every error as {"detail": "one line"}, never a traceback: the app's exception handlers, the answers
for what no route takes under /api, and the text checks of headers. A refused parameter (an
InvalidParameter) is named by its JSON field."""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from ..errors import InvalidParameter, NoSpace, TooLong, TunesmithError
from ..generation import one_line
from ..params import text_problem
from .bodies import job_names
from .redact import redact
from .store import StoreDamaged

log = logging.getLogger("tunesmith.server")

TYPE_WORDS = {"float_type": "a number", "int_type": "a whole number", "bool_type": "true or false",
              "string_type": "a text", "meter_type": 'a meter as written, "3/4", or its beats a bar, 3'}


def plain(message: str) -> str:
    """One line; a lone surrogate is escaped, so that the answer can be UTF-8."""
    return printable(one_line(Exception(message))[:500])


def said(err: Exception) -> str:
    """An error's message; a refused parameter named by its field in POST /api/jobs (bodies.compat_names
    renders mlx-audiogen's route's own)."""
    return err.render(job_names()) if isinstance(err, InvalidParameter) else str(err)


def printable(value):
    """`value` with every text made encodable (a lone surrogate becomes the 6 characters \\ud800): what an older
    version stored, or an exception quoted, must not turn an answer into a 500."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {printable(k): printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable(v) for v in value]
    return value


def check_header_text(value: str | None, what: str):
    """A text that comes outside a JSON body (a header, a file name) is checked as the bodies' texts are."""
    problem = text_problem(value) if value else None
    if problem:
        raise HTTPException(422, f"{what}: {problem}")


def _shown_json(value) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def validation_detail(errors: list) -> str:
    first = errors[0]
    kind, loc = first.get("type", ""), [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path",
                                                                                           "header")]
    if loc[:1] == ["prompt"] and len(loc) > 1:  # the union's member names mean nothing to a client
        text = 'prompt must be a text or a schedule [[start_second, "text"], ...]'
    elif kind in TYPE_WORDS and loc:
        text = f"{'.'.join(loc)} must be {TYPE_WORDS[kind]}, got {_shown_json(first.get('input'))}"
    elif kind == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "")
        text = f"the body is not valid JSON{': ' + reason if reason else ''}"
    elif kind == "model_attributes_type" or (not loc and kind.endswith("_type")):
        text = "the body must be a JSON object"
    else:
        text = f"{'.'.join(loc) + ': ' if loc else ''}{first.get('msg', 'invalid value')}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more)"
    return plain(text)


def install_error_handlers(app: FastAPI):
    def detail(text: str) -> str:  # server paths said in words: the log keeps them
        return plain(redact(text, app.state.places))

    @app.exception_handler(TunesmithError)
    async def tunesmith_error(request, err: TunesmithError):
        return JSONResponse({"detail": detail(said(err))}, status_code=400)

    @app.exception_handler(TooLong)
    async def too_long(request, err: TooLong):
        return JSONResponse({"detail": detail(said(err))}, status_code=413)

    @app.exception_handler(NoSpace)
    async def no_space(request, err: NoSpace):  # reads go on: only what writes answers this
        return JSONResponse({"detail": plain(str(err))}, status_code=507)

    @app.exception_handler(StoreDamaged)
    async def store_damaged(request, err: StoreDamaged):
        return JSONResponse({"detail": plain(str(err))}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err: RequestValidationError):
        return JSONResponse({"detail": validation_detail(list(err.errors()))}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException):
        text = err.detail if isinstance(err.detail, str) else json.dumps(err.detail)
        return JSONResponse({"detail": detail(text)}, status_code=err.status_code, headers=err.headers)

    @app.exception_handler(Exception)
    async def internal(request, err: Exception):  # a bug of ours: logged whole, answered in one line
        log.exception("%s %s failed", request.method, request.url.path)
        # Starlette re-raises after this answer and uvicorn then drops the connection: saying so lets a
        # kept-alive client open a new one instead of failing its next request.
        return JSONResponse({"detail": f"internal error: {type(err).__name__} (the server log has the details)"},
                            status_code=500, headers={"Connection": "close"})


def answer_unrouted(app: FastAPI, routers: list[APIRouter]):
    """Under /api, what no route of `routers` (those the app includes) takes: 405 with Allow for a path a
    route has under another method (OPTIONS: 204 with Allow), else 404. Without this the page's mount at /
    would answer both with 404."""
    routes = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]

    @app.api_route("/api/{rest:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                   include_in_schema=False)
    def unrouted(request: Request):
        path = request.url.path
        allowed = sorted({m for r in routes if r.path_regex.match(path) for m in r.methods})
        if not allowed:
            raise HTTPException(404, f"no route {path[:80]!r} (the API is listed at /docs)")
        allow = ", ".join(allowed + ["OPTIONS"])
        if request.method == "OPTIONS":
            return Response(status_code=204, headers={"Allow": allow})
        raise HTTPException(405, f"{request.method} is not allowed on {path[:80]}: it takes {allow}",
                            headers={"Allow": allow})
