"""The page at a phone's width (390x844) and a laptop's (1440x900), light and dark, in real Chromium, with jobs
in the list: PNGs saved for review by eye under $TUNESMITH_TEST_ARTIFACTS (default test-artifacts/), and the
layout facts asserted: nothing wider than a phone's screen, whatever the model and with Advanced open; on a
laptop the form and the job list side by side, both on screen."""

from __future__ import annotations

import json
import urllib.request

import pytest

from .test_page import WAIT_MS, artifacts, browser  # noqa: F401  (Debian's chromium through Playwright)
from .test_page_player import sao_folder, two_models  # noqa: F401  (a MusicGen alias and a Stable Audio folder)

pytestmark = pytest.mark.slow

PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1440, "height": 900}
OVERFLOW = "document.documentElement.scrollWidth <= innerWidth"


def post(server, body: dict) -> dict:
    request = urllib.request.Request(f"{server.url}/api/jobs", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request) as res:
        return json.loads(res.read())


def with_jobs(browser, server, viewport, scheme="light"):  # noqa: F811
    page = browser.new_page(viewport=viewport, color_scheme=scheme)
    page.goto(server.url)
    page.wait_for_function("document.querySelectorAll('li.job[data-status=done]').length === 3", timeout=WAIT_MS)
    assert page.locator("li.job[data-status=cancelled]").count() == 1
    page.evaluate("scrollTo(0, document.documentElement.scrollHeight)")  # waveforms are drawn as they come near
    page.wait_for_function("document.querySelectorAll('li.job canvas.wave[data-drawn=true]').length === 3",
                           timeout=WAIT_MS)
    page.evaluate("scrollTo(0, 0)")
    return page


def make_jobs(server):
    """Three done jobs (a loop, one of Stable Audio) and a cancelled one, as a user's list would hold."""
    post(server, {"prompt": "warm lofi hip hop beat, dusty vinyl, mellow rhodes", "duration": 1.5, "seed": 7,
                  "loop": True})
    post(server, {"prompt": "gentle rain on a window, distant thunder", "duration": 0.5, "seed": 3,
                  "model": "sao-tiny", "steps": 4})
    long = post(server, {"prompt": "a long ambient piece that is cancelled", "duration": 250})
    urllib.request.urlopen(urllib.request.Request(f"{server.url}/api/jobs/{long['id']}/cancel", method="POST"))
    post(server, {"prompt": "80s synthwave, driving bassline, gated drums, bright analog leads", "duration": 2,
                  "seed": 11, "variations": 1})


def test_phone_width(browser, two_models):  # noqa: F811
    make_jobs(two_models)
    page = with_jobs(browser, two_models, PHONE)
    assert page.evaluate(OVERFLOW)
    page.screenshot(path=str(artifacts() / "phone.png"), full_page=True)
    page.click("#advanced summary")
    for model in ("small", "sao-tiny"):  # each family's fields, Advanced open: still no sideways scrolling
        page.select_option("#model", model)
        assert page.evaluate(OVERFLOW), model
    page.screenshot(path=str(artifacts() / "phone-advanced.png"), full_page=True)
    page.emulate_media(color_scheme="dark")
    page.click("#advanced summary")
    page.screenshot(path=str(artifacts() / "phone-dark.png"))
    assert page.evaluate(OVERFLOW)

    page.goto(f"{two_models.url}/docs")
    page.wait_for_selector(".opblock")
    page.screenshot(path=str(artifacts() / "phone-docs.png"))


def test_laptop_width(browser, two_models):  # noqa: F811
    make_jobs(two_models)
    for scheme in ("light", "dark"):
        page = with_jobs(browser, two_models, LAPTOP, scheme)
        assert page.evaluate(OVERFLOW)
        form, jobs = page.locator("#make").bounding_box(), page.locator("#jobs-section").bounding_box()
        assert form["x"] + form["width"] <= jobs["x"]  # side by side, the list on the right
        for box in (form, jobs):
            assert 0 <= box["y"] < LAPTOP["height"] / 4 and box["x"] + box["width"] <= LAPTOP["width"]
        first_player = page.locator("li.job .player").first.bounding_box()
        assert first_player["y"] + first_player["height"] <= LAPTOP["height"]  # a clip to play without scrolling
        failed = [f["check"] for job in page.evaluate("fetch('/api/jobs').then(r => r.json())")
                  for f in job["files"] if f["check"] and not f["check"]["ok"]]
        shown = page.locator(".file .check").all_inner_texts()
        assert shown == [f"failed the output check: {c['summary']}: {c['advice']}" for c in failed]  # why, what to do
        assert all(c["advice"].startswith("the file was kept; try") for c in failed)
        page.screenshot(path=str(artifacts() / f"laptop-{scheme}.png"))
        page.close()
