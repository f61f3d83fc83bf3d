"""schemathesis against /openapi.json, a bounded number of examples per route: no 500s, every error one
line, and the server as its schema describes it (every check schemathesis has, no exclusions)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")

pytestmark = pytest.mark.slow


def test_no_route_answers_500(start_server):
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable

    server = start_server(max_queue=3)
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            @settings(max_examples=12, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                response = case.call(base_url=server.url, timeout=10)
                if response.status_code >= 500:
                    failures.append((case.method, case.formatted_path, case.body, response.status_code, response.text))
                elif response.status_code >= 400 and "json" in str(response.headers.get("content-type")):
                    detail = response.json().get("detail")
                    if not (isinstance(detail, str) and "\n" not in detail):
                        failures.append((case.method, case.formatted_path, case.body, response.status_code, detail))

            try:
                check()
            except Unsatisfiable:  # nothing to make invalid (a route without parameters)
                pass
    assert not failures, failures[:5]


def test_every_check_passes(start_server, tmp_path):
    """schemathesis' command with --checks all over its four phases (examples, coverage: unsupported methods
    and boundary values, fuzzing, stateful): status codes, content types, headers (Allow), response schemas,
    negative data rejected, schema-valid data accepted (or refused with 400, see schemathesis.toml)."""
    tool = shutil.which("schemathesis") or shutil.which("st")
    if tool is None:
        pytest.skip("the schemathesis command is not installed")
    server = start_server(max_queue=3)
    run = subprocess.run([tool, "--no-color", "--config-file", str(Path(__file__).with_name("schemathesis.toml")),
                          "run", f"{server.url}/openapi.json", "--checks", "all", "--max-examples", "10",
                          "--seed", "1", "--generation-deterministic", "--workers", "1", "--request-timeout", "20"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)  # its cache: not in the tree
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
