"""/docs without a network: Swagger UI's script and stylesheet served from an installed package
(fastapi-offline ships swagger-ui-dist's files), so a tool that never needs the cloud has docs that do not
either. FastAPI's own /docs loads them from a CDN and shows a blank page offline.

app.py turns FastAPI's /docs off (docs_url=None) and includes `router` in its place."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from starlette.exceptions import HTTPException

DOCS = "/docs"
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}  # what the page loads
# validatorUrl: None, or Swagger UI asks validator.swagger.io about the schema (a request that leaves the machine)
PARAMETERS = {"validatorUrl": None}

router = APIRouter(include_in_schema=False)


def asset_folder() -> Path | None:
    """Where the installed fastapi-offline keeps swagger-ui-dist's files; None when it is not installed."""
    spec = find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "static"
    return folder if all((folder / name).is_file() for name in ASSETS) else None


@router.get(DOCS)
def docs(request: Request):
    root = request.scope.get("root_path", "")
    if asset_folder() is None:  # an install without the server extra's fastapi-offline: said, not a blank page
        return HTMLResponse("<!doctype html><title>tunesmith API</title><p>The API docs need the server extra's "
                            "fastapi-offline package (pip install 'tunesmith[server]'); the schema is at "
                            f'<a href="{root}/openapi.json">/openapi.json</a>.</p>', status_code=503)
    app = request.app
    return get_swagger_ui_html(openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} API",
                               swagger_js_url=f"{root}{DOCS}/swagger-ui-bundle.js",
                               swagger_css_url=f"{root}{DOCS}/swagger-ui.css",
                               swagger_favicon_url=f"{root}/favicon.svg", oauth2_redirect_url=None,
                               swagger_ui_parameters=PARAMETERS)


@router.get(DOCS + "/{name}")
def asset(name: str):
    folder = asset_folder()
    if name not in ASSETS or folder is None:
        raise HTTPException(404, f"no file {name[:80]!r} under /docs")
    return FileResponse(folder / name, media_type=ASSETS[name])
