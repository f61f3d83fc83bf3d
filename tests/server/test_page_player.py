"""The page's model picker and player in real Chromium: each model by its name with its family, longest clip and
licence (never a server path); the Seconds field follows the model; example prompts one click away; a
waveform with a playhead and click-to-seek, the duration before play, loops played as loops, and the job
just asked for scrolled into view."""

from __future__ import annotations

import pytest

from .conftest import ThreadServer, make_settings
from .test_page import WAIT_MS, browser, job_card  # noqa: F401  (Debian's chromium through Playwright)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sao_folder(tmp_path_factory):
    from ..stable_audio.tiny import save_tiny_pipeline

    folder = tmp_path_factory.mktemp("served") / "sao-tiny"
    save_tiny_pipeline(folder)
    return folder


@pytest.fixture
def two_models(mono_ckpt, sao_folder, tmp_path):
    """A server offering "small" (the alias, served from the tiny MusicGen checkpoint) and a Stable Audio folder."""
    from tunesmith.models import describe
    from tunesmith.server.app import create_app
    from tunesmith.server.registry import Entry, Registry

    settings = make_settings(mono_ckpt[0], tmp_path / "data")
    registry = Registry([Entry("small", describe(mono_ckpt[0]), "small"),
                         Entry("sao-tiny", describe(sao_folder), str(sao_folder))])
    server = ThreadServer(create_app(settings, registry))
    yield server
    server.stop()


def test_models_say_family_lengths_and_licence(two_models, sao_folder):
    import json
    import urllib.request

    with urllib.request.urlopen(f"{two_models.url}/api/models") as res:
        text = res.read().decode()
    small, sao = json.loads(text)
    assert (small["name"], small["family_name"], small["licence"]) == ("small", "MusicGen", "CC-BY-NC-4.0")
    assert "non-commercial" in small["licence_terms"].lower()
    assert small["max_duration"] == 300 and small["shortest"] is None and small["longest"] is None
    assert (sao["name"], sao["family_name"], sao["licence"], sao["licence_terms"]) == ("sao-tiny", "Stable Audio",
                                                                                     None, None)
    assert sao["max_duration"] == pytest.approx(0.512) and str(sao_folder.parent) not in text


def test_the_picker_follows_the_model(browser, two_models, sao_folder):  # noqa: F811
    page = browser.new_page()
    page.goto(two_models.url)
    page.wait_for_selector("#model option", state="attached")
    assert page.locator("#model option").all_inner_texts() == ["small · MusicGen", "sao-tiny · Stable Audio"]
    info = page.inner_text("#model-info")
    assert "MusicGen" in info and "up to 300 s" in info and "CC-BY-NC-4.0" in info
    assert "non-commercial" in page.get_attribute("#model-info .licence", "title").lower()
    assert page.get_attribute("#duration", "max") == "300"
    assert page.locator("button.example").all_inner_texts()[0] == "lofi beat"

    # a Stable Audio folder: its own longest clip; the Seconds field takes no more than that
    page.select_option("#model", "sao-tiny")
    info = page.inner_text("#model-info")
    assert "Stable Audio" in info and "up to 0.5 s" in info and "model card" in info
    assert page.get_attribute("#duration", "max") == "0.51" and page.input_value("#duration") == "0.51"
    assert str(sao_folder.parent) not in page.content()  # the server's paths are never shown

    # an example, one click away: the prompt (and a loop, for a loop) filled in, within the model's limit
    page.click("button.example:text('drum loop')")
    assert "drum loop" in page.input_value("#prompt")
    assert page.is_checked("input[name=loop]") and float(page.input_value("#duration")) <= 0.51

    page.select_option("#model", "small")
    assert page.get_attribute("#duration", "max") == "300"
    page.click("button.example:text('synthwave')")
    assert page.input_value("#prompt").startswith("80s synthwave") and not page.is_checked("input[name=loop]")


def test_the_player(browser, start_server):  # noqa: F811
    server = start_server()
    page = browser.new_page(viewport={"width": 390, "height": 844})
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server.url)
    page.wait_for_selector("#model option", state="attached")
    assert page.locator("#advanced").get_attribute("open") is None  # Advanced starts collapsed

    # a seamless loop of 1 s: on a phone the job, below the form, is scrolled into view once asked for
    page.fill("#prompt", "a drum loop")
    page.fill("#duration", "1")
    page.click("#advanced summary")
    page.check("input[name=loop]")
    page.evaluate("scrollTo(0, 0)")
    assert page.evaluate("document.querySelector('#jobs').getBoundingClientRect().top > innerHeight")  # off screen
    page.focus("#duration")
    page.keyboard.press("Enter")  # submits the form where it stands, scrolled to the top
    card = job_card(page).first
    card.wait_for()
    page.wait_for_function("""() => { const r = document.querySelector('li.job .job-prompt').getBoundingClientRect();
                                      return r.top >= 0 && r.bottom <= innerHeight; }""")
    job_card(page, "done").first.wait_for(timeout=WAIT_MS)
    audio = card.locator("audio")
    time = card.locator(".time")
    page.wait_for_function("document.querySelector('li.job .time').textContent.endsWith('/ 0:01.0')")
    assert audio.evaluate("a => a.paused") and time.inner_text() == "0:00.0 / 0:01.0"  # the length, before play
    assert audio.evaluate("a => a.loop") and card.locator("button.loop").get_attribute("aria-pressed") == "true"

    # a loop goes round without a seam: played through Web Audio (the <audio> element stays paused); from 90%
    # along the waveform, the playhead comes round to the start and goes on
    wave = card.locator("canvas.wave[data-drawn=true]")
    wave.wait_for()
    box = wave.bounding_box()
    wave.click(position={"x": box["width"] * 0.9, "y": box["height"] / 2})
    page.wait_for_function("""() => { const c = document.querySelector('li.job canvas.wave');
        return c.closest('.file').dataset.playing === 'true' && Number(c.dataset.playhead) < 0.5; }""",
                           timeout=WAIT_MS)
    assert audio.evaluate("a => a.paused") and card.locator("button.play").get_attribute("aria-label") == "pause"
    card.locator("button.play").click()  # pause
    assert card.locator(".file").get_attribute("data-playing") == "false"
    assert card.locator("button.play").get_attribute("aria-label") == "play"
    card.locator("button.loop").click()
    assert not audio.evaluate("a => a.loop") and card.locator("button.loop").get_attribute("aria-pressed") == "false"

    # a clip that is not a loop plays once; click-to-seek: halfway along the waveform plays from halfway
    page.fill("#prompt", "a short tune")
    page.uncheck("input[name=loop]")
    page.click("#submit")
    page.wait_for_function("document.querySelectorAll('li.job[data-status=done]').length === 2", timeout=WAIT_MS)
    tune = job_card(page).first
    assert not tune.locator("audio").evaluate("a => a.loop")
    assert tune.locator("button.loop").get_attribute("aria-pressed") == "false"
    loop_card = job_card(page).nth(1)
    loop_card.locator("button.loop").click()  # looped again: it would play on and on ...
    assert loop_card.locator("audio").evaluate("a => a.loop")
    loop_card.locator("button.play").click()
    page.wait_for_function("document.querySelectorAll('li.job')[1].querySelector('.file').dataset.playing === 'true'")
    wave = tune.locator("canvas.wave[data-drawn=true]")
    wave.wait_for()
    box = wave.bounding_box()
    wave.click(position={"x": box["width"] / 2, "y": box["height"] / 2})
    page.wait_for_function("document.querySelector('li.job audio').currentTime >= 0.45")
    assert float(wave.get_attribute("data-playhead")) >= 0.45
    # ... until another clip starts: one plays at a time
    page.wait_for_function("document.querySelectorAll('li.job')[1].querySelector('.file').dataset.playing === 'false'")
    assert errors == []
