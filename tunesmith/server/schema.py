"""What /openapi.json says the routes answer: every error is {"detail": "one line"}, and every status
code a route can give is listed, so that generated clients and schemathesis (run with every check in
tests/server/test_schemathesis.py) find the server as documented."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    detail: str = Field(..., description="what went wrong and what to do, in one line")


REASONS = {
    400: "a value the server refuses (the detail names it and why), or a Host that is not this server's",
    401: "the server was started with --token: send 'Authorization: Bearer TOKEN'",
    403: "a state-changing request from a web page whose origin was not allowed with --cors",
    404: "no such job (finished jobs are pruned after --keep-days)",
    409: "the job is not in a state that allows this (not done yet, already finished, running)",
    410: "the job's audio is gone from the server's disk, or damaged there",
    413: "the body or upload is too large, or its audio lasts too long",
    422: "the body or a parameter does not have the expected shape or type",
    429: "the queue or the uploads in flight are full: try again after Retry-After seconds",
    500: "a bug of the server's: its log has the details",
    503: "the server has too many open connections: try again shortly",
    507: "the server's disk is full: reads still work",
}

AUDIO_TYPES = ("audio/wav", "audio/flac", "audio/mpeg", "audio/ogg", "audio/mp4", "audio/aiff")


def errors(*codes: int) -> dict:
    """FastAPI `responses` for these error codes, each {"detail": str}."""
    return {code: {"model": ErrorOut, "description": REASONS[code]} for code in codes}


# What any route may answer: the Guard's refusals (Host, token, origin), a malformed request, a bug, and
# the connection cap.
EVERY_ROUTE = errors(400, 401, 403, 422, 500, 503)

AUDIO = {200: {"description": "the audio file", "content": {t: {} for t in AUDIO_TYPES}},
         202: {"model": ErrorOut, "description": "the job is not done yet: poll it, then ask again"}}
REPEATED = {200: {"description": "the same Idempotency-Key and body again: the job it made, not a new one"}}
EVENTS = {200: {"description": "Server-Sent Events", "content": {"text/event-stream": {}}}}

# What request.text_problem refuses, as a JSON Schema pattern, so that the schema says it too (a lone
# surrogate cannot be written in a pattern, and JSON that generators make holds none).
TEXT_PATTERN = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$"


def mark_texts(schema: dict) -> None:
    """Give every free text of a body's JSON Schema TEXT_PATTERN (pydantic's json_schema_extra hook)."""
    if isinstance(schema, dict):
        if schema.get("type") == "string" and not {"enum", "const", "pattern", "format"} & set(schema):
            schema["pattern"] = TEXT_PATTERN
        for value in schema.values():
            mark_texts(value)
    elif isinstance(schema, list):
        for value in schema:
            mark_texts(value)
