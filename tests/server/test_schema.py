"""The server as /openapi.json describes it: methods a path does not take, and the documented answers."""

from __future__ import annotations


def test_a_method_a_path_does_not_take_is_405_with_allow(client_for):
    client, _ = client_for(start_worker=False)
    for method, path, allow in (("GET", "/api/generate", "POST, OPTIONS"), ("PUT", "/api/jobs", "GET, POST, OPTIONS"),
                                ("GET", "/api/jobs/abc/cancel", "POST, OPTIONS"),
                                ("POST", "/api/jobs/abc", "DELETE, GET, OPTIONS")):
        answer = client.request(method, path)
        assert answer.status_code == 405, (method, path, answer.text)
        assert answer.headers["allow"] == allow
        detail = answer.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and method in detail


def test_options_answers_allow_and_unknown_paths_404(client_for):
    client, _ = client_for(start_worker=False)
    answer = client.options("/api/jobs/abc")
    assert answer.status_code == 204 and answer.headers["allow"] == "DELETE, GET, OPTIONS"
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404 and "nothing-here" in missing.json()["detail"]
    assert client.get("/").status_code == 200 and "<html" in client.get("/").text.lower()  # the page still


def test_every_error_is_documented_as_a_one_line_detail(client_for):
    client, _ = client_for(start_worker=False)
    schema = client.get("/openapi.json").json()
    error = schema["components"]["schemas"]["ErrorOut"]
    assert error["properties"]["detail"]["type"] == "string"
    assert "HTTPValidationError" not in schema["components"]["schemas"]  # FastAPI's list-shaped 422 is not ours
    jobs = schema["paths"]["/api/jobs"]["post"]["responses"]
    assert {"200", "202", "400", "413", "422", "429", "500", "507"} <= set(jobs)
    audio = schema["paths"]["/api/jobs/{job_id}/audio"]["get"]["responses"]
    assert {"200", "202", "404", "409", "410"} <= set(audio) and "audio/wav" in audio["200"]["content"]
