"""/docs with no network: Swagger UI's files come from the installed package, not a CDN. In real Chromium,
every request that does not go to the server is refused (as on a machine without a network) and recorded:
the operations list still renders, and none was made."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest

from .test_page import browser  # noqa: F401  (Debian's chromium through Playwright; skips without it)

pytestmark = pytest.mark.slow


def offline_page(browser, server):  # noqa: F811
    """A page whose requests are all recorded; any that leaves 127.0.0.1 is refused (no network)."""
    page = browser.new_page()
    requests = []

    def only_local(route):
        requests.append(route.request.url)
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            route.abort("internetdisconnected")

    page.route("**/*", only_local)
    page.on("request", lambda request: requests.append(request.url))  # those routing does not see (favicons)
    return page, requests


def test_docs_render_offline_from_the_package(browser, start_server):  # noqa: F811
    server = start_server()
    page, requests = offline_page(browser, server)
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(f"{server.url}/docs")
    page.wait_for_selector(".opblock", timeout=60_000)  # the operations list, built from /openapi.json
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/api/jobs" in [p.replace("\u200b", "") for p in paths]  # Swagger UI breaks paths with zero-width spaces
    assert page.locator(".information-container .title").inner_text().startswith("tunesmith")
    icon = page.locator("link[rel='shortcut icon']").get_attribute("href")
    assert icon == "/favicon.svg"
    served = page.request.get(f"{server.url}{icon}")
    assert served.status == 200 and served.headers["content-type"].startswith("image/svg+xml")
    assert requests and all(urlsplit(url).hostname == "127.0.0.1" for url in requests), requests
    assert f"{server.url}/docs/swagger-ui-bundle.js" in requests and errors == []


def test_the_page_loads_nothing_from_elsewhere(browser, start_server):  # noqa: F811
    server = start_server()
    page, requests = offline_page(browser, server)
    page.goto(server.url)
    page.wait_for_selector("#model option", state="attached")
    assert page.locator("link[rel=icon]").get_attribute("href") == "favicon.svg"
    assert requests and all(urlsplit(url).hostname == "127.0.0.1" for url in requests), requests


def test_a_docs_file_that_is_not_there_is_one_line(start_server):
    server = start_server()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server.url}/docs/..%2Fapp.py")
    assert refused.value.code == 404 and "\n" not in json.loads(refused.value.read())["detail"]
