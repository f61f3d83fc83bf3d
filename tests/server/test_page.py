"""The page at / in real Chromium (Debian's chromium package, driven by Playwright): submit, watch the
progress reach 100%, play, download, cancel, reload, "again with this seed", a phone's width.

.ci/run installs chromium and Playwright; elsewhere the test skips without them. A screenshot of each
width is saved under $TUNESMITH_TEST_ARTIFACTS (default: test-artifacts/)."""

from __future__ import annotations

import io
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ..acestep.conftest import ace_ckpt  # noqa: F401  (the tiny pipeline the family's tests build)

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("TUNESMITH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--autoplay-policy=no-user-gesture-required"]
WAIT_MS = 120_000  # only keeps a broken run from hanging CI


def artifacts() -> Path:
    folder = Path(os.environ.get("TUNESMITH_TEST_ARTIFACTS", "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser():
    if not Path(CHROMIUM).is_file():
        if os.environ.get("CI"):
            pytest.fail(f"no chromium at {CHROMIUM}: .ci/run installs Debian's chromium package")
        pytest.skip("no chromium here (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def job_card(page, status=None):
    selector = "li.job" + (f'[data-status="{status}"]' if status else "")
    return page.locator(selector)


def test_the_page_makes_plays_downloads_and_cancels(browser, start_server, tmp_path):
    from tests.stems.tiny import save_bag

    server = start_server(worker=dict(stems_models={"htdemucs": str(save_bag(tmp_path / "bag"))}))
    page = browser.new_page(accept_downloads=True)
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server.url)
    page.wait_for_selector("#model option", state="attached")
    assert page.locator("#model").input_value()  # the registered model, from /api/models

    # make one clip with a fixed seed and a fade, and watch it finish
    page.fill("#prompt", "lofi beat with warm keys")
    page.fill("#duration", "1")
    page.fill("#seed", "42")
    page.click("#advanced summary")
    assert page.locator("#melody").is_hidden()  # the tiny model follows no melody: no melody to upload
    page.fill("input[name=fade_out]", "0.2")
    page.click("#submit")
    done = job_card(page, "done").first
    done.wait_for(timeout=WAIT_MS)
    assert done.locator("progress").evaluate("bar => bar.value") == 1  # the bar reached 100%
    assert done.locator(".job-status").inner_text() == "done"
    assert "seed 42" in done.locator(".job-meta").inner_text()

    # play: the player loads the clip and runs
    audio = done.locator("audio")
    state = audio.evaluate("""async a => { await a.play(); await new Promise(r => setTimeout(r, 300));
                                           return {duration: a.duration, paused: a.paused, error: a.error}; }""")
    assert state["error"] is None and not state["paused"] and abs(state["duration"] - 1.0) < 0.05
    page.wait_for_selector("li.job canvas.wave[data-drawn=true]")  # the waveform is drawn

    # download: a RIFF WAV of the asked length
    with page.expect_download() as download:
        done.locator("a.download", has_text="WAV").click()
    saved = tmp_path / "clip.wav"
    download.value.save_as(saved)
    assert saved.read_bytes()[:4] == b"RIFF"
    info = sf.info(str(saved))
    assert abs(info.frames / info.samplerate - 1.0) < 1e-3
    page.screenshot(path=str(artifacts() / "page-desktop.png"), full_page=True)

    # cancel: a long job, and one queued behind it; both end cancelled, neither makes a file
    for seconds in ("250", "2"):
        page.fill("#duration", seconds)
        page.fill("#seed", "")
        page.click("#submit")
        page.wait_for_function(f"document.querySelectorAll('li.job').length === {2 if seconds == '250' else 3}")
    for card in job_card(page).all()[:2]:
        card.locator("button.cancel").click()
    page.wait_for_function("document.querySelectorAll('li.job[data-status=cancelled]').length === 2",
                           timeout=WAIT_MS)
    assert job_card(page, "cancelled").locator(".file").count() == 0

    # the list survives a reload (it is the server's), newest first
    page.reload()
    page.wait_for_function("document.querySelectorAll('li.job').length === 3")
    assert [c.get_attribute("data-status") for c in job_card(page).all()] == ["cancelled", "cancelled", "done"]

    # stems: a job of its own, one player per stem
    job_card(page, "done").locator("button.stems").click()
    page.wait_for_function("document.querySelectorAll('li.job[data-status=done]').length === 2", timeout=WAIT_MS)
    stems = job_card(page, "done").first
    assert stems.locator(".stem-name").all_inner_texts() == ["Drums", "Bass", "Other", "Vocals"]
    assert stems.locator("audio").count() == 4 and stems.locator("button.stems").is_hidden()
    stems.locator("button.delete").click()
    page.wait_for_function("document.querySelectorAll('li.job').length === 3")

    # "again with this seed" fills the form from the job
    job_card(page, "done").locator("button.again").click()
    assert page.input_value("#seed") == "42" and page.input_value("#prompt") == "lofi beat with warm keys"
    assert page.input_value("#duration") == "1" and page.input_value("input[name=fade_out]") == "0.2"

    # a phone's width: nothing wider than the screen
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(artifacts() / "page-phone.png"), full_page=True)
    assert errors == []


def test_a_bad_value_is_shown_in_one_line(browser, start_server):
    server = start_server()
    page = browser.new_page()
    page.goto(server.url)
    page.wait_for_selector("#model option", state="attached")
    page.fill("#prompt", "rain")
    page.fill("#duration", "999")  # past the model's longest here (the server's 300 s): the page says so itself
    page.click("#submit")
    page.wait_for_selector("#form-error:not(:empty)")
    message = page.inner_text("#form-error")
    assert message.startswith("Seconds:") and "300" in message and "\n" not in message
    assert page.evaluate("document.activeElement.id") == "duration"

    page.fill("#duration", "2")
    page.fill("#prompt", "   ")  # what only the server refuses: its one line, shown as it is
    page.click("#submit")
    page.wait_for_function("(t => t && !t.startsWith('Seconds'))(document.querySelector('#form-error').textContent)")
    message = page.inner_text("#form-error")
    assert "prompt" in message and "\n" not in message
    assert job_card(page).count() == 0


def test_a_song_with_lyrics_from_the_page(browser, mono_ckpt, ace_ckpt, tmp_path):  # noqa: F811
    from tunesmith.server.app import create_app

    from .conftest import ThreadServer, make_settings

    settings = make_settings(mono_ckpt[0], tmp_path / "data")
    settings.models = [str(ace_ckpt[0]), str(mono_ckpt[0])]
    server = ThreadServer(create_app(settings))
    try:
        page = browser.new_page()
        page.goto(server.url)
        page.wait_for_selector("#model option", state="attached")
        assert "ACE-Step · 10 s to 300 s" in page.inner_text("#model-info")  # a song is 10 s at least
        assert page.get_attribute("#duration", "min") == "10" and page.input_value("#duration") == "10"
        page.click("#advanced summary")
        page.click("button.example:text('ballad')")  # an example song fills the lyrics too
        assert page.input_value("textarea[name=lyrics]").startswith("[verse]")
        page.fill("#prompt", "indie pop, female vocals")
        page.fill("#duration", "10")
        assert page.locator("textarea[name=lyrics]").is_visible() and page.locator("#repaint-start").is_visible()
        page.fill("textarea[name=lyrics]", "[verse]\nrain on the window")
        page.click("#submit")
        job_card(page, "done").first.wait_for(timeout=WAIT_MS)
        job = page.evaluate("fetch('/api/jobs').then(r => r.json())")[0]
        assert job["family"] == "acestep" and job["request"]["options"]["lyrics"] == "[verse]\nrain on the window"

        # repaint seconds 2 to 5 of a 12 s song: the job keeps the song's length, whatever the duration field says
        source = tmp_path / "song.wav"
        sf.write(source, np.random.default_rng(0).uniform(-0.3, 0.3, (12 * 48000, 2)).astype("float32"), 48000)
        page.set_input_files("#continuation", str(source))
        page.fill("#repaint-start", "2")
        page.fill("#repaint-end", "5")
        page.click("#submit")
        job_card(page, "done").nth(1).wait_for(timeout=WAIT_MS)
        job = page.evaluate("fetch('/api/jobs').then(r => r.json())")[0]
        assert job["status"] == "done" and job["request"]["options"]["repaint"] == [2, 5], job
        assert job["duration"] == 12.0
        with urllib.request.urlopen(f"{server.url}/api/jobs/{job['id']}/audio") as res:
            audio, rate = sf.read(io.BytesIO(res.read()), always_2d=True)
        assert rate == 48000 and audio.shape == (12 * 48000, 2)
        page.select_option("#model", mono_ckpt[0].name)  # a MusicGen model (by its folder's name): no lyrics
        assert page.locator("textarea[name=lyrics]").is_hidden() and page.locator("#continuation").is_visible()
        assert page.locator("#repaint-start").is_hidden()
    finally:
        server.stop()
