"""The page's LoRA picker (GET /api/loras, a strength slider) and its Stable Audio 3 fields (repaint spans of an
init audio, audio to extend, audio-to-audio with a strength, loops), in real Chromium as test_page.py drives it."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ..stable_audio3.conftest import sa3_ckpt  # noqa: F401  (the tiny pipeline the family's tests build)
from .test_lora import lora_dir  # noqa: F401  (warm: a PEFT folder, bright: a single file)
from .test_page import WAIT_MS, browser, job_card  # noqa: F401


def jobs(page) -> list:
    return page.evaluate("fetch('/api/jobs').then(r => r.json())")


def slide(page, value: float):
    page.eval_on_selector("#lora-scale", "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }",
                          str(value))


def test_the_lora_picker_sets_each_jobs_set(browser, start_server, lora_dir):  # noqa: F811
    server = start_server(lora_dir=lora_dir, lora=["warm@0.5"])
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(server.url)
    page.wait_for_selector("#lora option", state="attached")
    page.click("#advanced summary")
    assert page.locator("#lora-fields").is_visible()
    options = page.eval_on_selector_all("#lora option", "os => os.map(o => [o.value, o.textContent])")
    assert options == [["", "server's: warm@0.5"], ["-", "none"], ["bright", "bright"], ["warm", "warm"]]
    assert page.locator("#lora-scale").is_disabled()  # the server's set: its own scale

    page.fill("#prompt", "jazz")
    page.fill("#duration", "0.4")
    page.select_option("#lora", "bright")
    slide(page, -0.8)
    assert page.inner_text("#lora-scale-shown") == "-0.80"
    page.click("#submit")
    job_card(page, "done").first.wait_for(timeout=WAIT_MS)
    assert jobs(page)[0]["request"]["lora"] == [["bright", -0.8]]

    page.select_option("#lora", "-")  # none: the base model, though the server runs warm by default
    page.click("#submit")
    job_card(page, "done").nth(1).wait_for(timeout=WAIT_MS)
    page.select_option("#lora", "")  # the server's set: no field sent
    page.click("#submit")
    job_card(page, "done").nth(2).wait_for(timeout=WAIT_MS)
    listed = jobs(page)
    assert [j["request"]["lora"] for j in listed[:2]] == [[["warm", 0.5]], []]

    job_card(page).nth(2).locator(".again").click()  # the bright job: its adapter and strength back
    assert page.input_value("#lora") == "bright" and page.input_value("#lora-scale") == "-0.8"
    assert not errors, errors


def test_no_picker_without_adapters(browser, start_server):  # noqa: F811
    server = start_server()
    page = browser.new_page()
    page.goto(server.url)
    page.wait_for_selector("#model option", state="attached")
    page.click("#advanced summary")
    assert page.locator("#lora-fields").is_hidden()


@pytest.fixture
def sa3_page(browser, sa3_ckpt, tmp_path):  # noqa: F811
    """(page, source, errors): the page of a server of the tiny Stable Audio 3 model, its advanced fields
    open; a quarter second of stereo audio to upload; the page's script errors."""
    from tunesmith.server.app import create_app

    from .conftest import ThreadServer, make_settings

    server = ThreadServer(create_app(make_settings(sa3_ckpt[0], tmp_path / "data")))
    try:
        source = tmp_path / "source.wav"
        sf.write(source, np.random.default_rng(0).uniform(-0.3, 0.3, (1024, 2)).astype("float32"), 4096)
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(server.url)
        page.wait_for_selector("#model option", state="attached")
        page.click("#advanced summary")
        yield page, source, errors
    finally:
        server.stop()


def test_stable_audio3_repaints_spans_and_extends(sa3_page):
    page, source, errors = sa3_page
    assert page.locator("#repaint-spans").is_visible() and page.locator("#extend").is_visible()
    assert page.locator("input[name=sampler]").is_hidden()  # Stable Audio Open's, not Stable Audio 3's
    assert page.locator("input[name=strength]").is_visible() and page.locator("#lora-fields").is_hidden()
    assert page.locator("#repaint-start").is_hidden()  # ACE-Step's one span

    page.fill("#prompt", "loud drums")
    page.fill("#duration", "0.25")
    page.fill("input[name=steps]", "4")
    page.set_input_files("#continuation", str(source))
    page.fill("#repaint-spans", "0:0.05, 0.15:")
    page.click("#submit")
    job_card(page, "done").first.wait_for(timeout=WAIT_MS)
    job = jobs(page)[0]
    assert job["status"] == "done" and job["request"]["options"]["repaint"] == [[0, 0.05], [0.15, None]], job

    page.fill("#repaint-spans", "4 to 8")  # the browser's own check, in one line
    page.click("#submit")
    page.wait_for_selector("#form-error:not(:empty)")
    assert page.inner_text("#form-error").startswith("Repaint spans (s):")
    page.fill("#repaint-spans", "")

    page.set_input_files("#continuation", [])
    page.set_input_files("#extend", str(source))
    page.fill("#duration", "0.5")  # extend 0.25 s to 0.5 s: the total length
    page.click("#submit")
    job_card(page, "done").nth(1).wait_for(timeout=WAIT_MS)
    job = jobs(page)[0]
    assert job["status"] == "done" and job["duration"] == 0.5, job
    assert job["request"]["options"].get("continuation"), job  # the extend upload, stored as the option

    job_card(page).nth(1).locator(".again").click()  # the repaint job: its spans back in the field
    assert page.input_value("#repaint-spans") == "0:0.05, 0.15:"
    assert not errors, errors


def test_stable_audio3_transforms_audio_and_makes_loops(sa3_page):
    """Audio-to-audio (an init audio and a strength, no spans) and a seamless loop from the page, each a job
    whose request says so, and a loop's file exactly the seconds asked."""
    import io

    page, source, errors = sa3_page
    page.fill("#prompt", "soft pads")
    page.fill("input[name=steps]", "4")

    page.set_input_files("#continuation", str(source))  # transformed whole: no repaint spans
    page.fill("input[name=strength]", "0.4")
    page.click("#submit")
    job_card(page, "done").first.wait_for(timeout=WAIT_MS)
    job = jobs(page)[0]
    options = job["request"]["options"]
    assert job["status"] == "done" and options["strength"] == 0.4 and job["request"]["audio_prompt"], job
    assert "repaint" not in options and "continuation" not in options, job

    page.set_input_files("#continuation", [])
    page.fill("input[name=strength]", "")
    page.fill("#duration", "0.5")
    page.check("input[name=loop]")
    page.click("#submit")
    job_card(page, "done").nth(1).wait_for(timeout=WAIT_MS)
    job = jobs(page)[0]
    assert job["status"] == "done" and job["request"]["loop"] is True and job["duration"] == 0.5, job
    assert "strength" not in job["request"]["options"] and not job["request"].get("audio_prompt"), job
    audio = page.request.get(page.url.rstrip("/") + job["files"][0]["url"]).body()
    samples, rate = sf.read(io.BytesIO(audio))
    assert samples.shape[0] == round(0.5 * rate)  # a loop is exactly its duration
    assert not errors, errors
