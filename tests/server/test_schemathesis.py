"""schemathesis against /openapi.json, a bounded number of examples per route: no 500s."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")


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
