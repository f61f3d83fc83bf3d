"""Stable Audio 3's aliases and its bad input: one line each, before any model loads."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.errors import InvalidParameter
from tunesmith.request import check_request

RATE = 4096
SOURCE = (0.3 * np.sin(np.linspace(0, 400, 2 * RATE, dtype=np.float32)).reshape(1, -1).repeat(2, 0), RATE)  # 2 s


def test_aliases_name_each_checkpoint_with_its_licence_and_longest_clip(capsys):
    from tunesmith.cli import main
    from tunesmith.hub import ALIASES
    from tunesmith.models import describe

    sa3 = {alias: info for alias, info in ALIASES.items() if info.family == "stable_audio3"}
    assert set(sa3) == {"sa3-small", "sa3-small-base", "sa3-small-sfx", "sa3-small-sfx-base", "sa3-medium",
                        "sa3-medium-base"}
    assert sa3["sa3-small"].repo == "stabilityai/stable-audio-3-small-music"
    assert sa3["sa3-medium-base"].repo == "stabilityai/stable-audio-3-medium-base"
    assert {info.licence for info in sa3.values()} == {"Stability-Community"}
    assert describe("sa3-small").longest == 120.0 and describe("sa3-medium").longest == 380.0
    assert describe("sa3-small").family == "stable_audio3"
    assert main(["models"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert all(alias in rows for alias in sa3)
    assert "Stable Audio 3" in rows["sa3-small"] and "120.0 s" in rows["sa3-small"] and "380.0 s" in rows["sa3-medium"]


def check(duration=None, **kwargs):
    """As generate() checks: no duration given means 10 s, or the audio_prompt's length."""
    return check_request("calm piano", family="stable_audio3", longest=120.0, duration=duration, **kwargs)


def test_a_repaint_keeps_the_source_length_and_orders_its_spans():
    request = check(audio_prompt=SOURCE, repaint=[(1.5, None), (0.0, 0.5)])
    assert request.duration == 2.0 and check().duration == 10.0
    assert request.diffusion.repaint == ((0.0, 0.5), (1.5, 2.0))
    assert check(audio_prompt=SOURCE, repaint=(0.5, 1.0), duration=4.0).diffusion.repaint == ((0.5, 1.0),)
    extend = check(continuation=SOURCE, duration=5.0)
    assert extend.duration == 5.0 and extend.diffusion.repaint == ((2.0, 5.0),) and extend.audio_prompt[1] == RATE


@pytest.mark.parametrize("kwargs, message", [
    (dict(duration=121), r"duration \(-d\) 121 s is longer than the 120 s this model makes at once"),
    (dict(audio_prompt=SOURCE, repaint=(1.0, 3.0)), r"repaint \(--repaint\) span 1:3 s is not inside the 2 s clip"),
    (dict(audio_prompt=SOURCE, repaint=(2.5, None)), r"span 2.5:2 s is not inside the 2 s clip"),
    (dict(audio_prompt=SOURCE, repaint=(1.0, 0.5)), r"span 1:0.5 s ends before it starts"),
    (dict(audio_prompt=SOURCE, repaint="1:2"),
     r"repaint \(--repaint\) must be a start and an end in seconds \(no end: to the end of the clip\)"),
    (dict(repaint=(0.0, 1.0)), r"repaint \(--repaint\) needs the audio to repaint"),
    (dict(audio_prompt=SOURCE, repaint=(0.0, 1.0), strength=0.5), r"strength \(--strength\) is for audio-to-audio"),
    (dict(audio_prompt=SOURCE, repaint=(0.0, 1.0), loop=True), r"a loop cannot repaint audio"),
    (dict(strength=0.5), r"strength \(--strength\) applies to an init audio"),
    (dict(sampler="euler"), r"sampler \(--sampler\) is not an option of Stable Audio 3 models"),
    (dict(continuation=SOURCE, duration=121), r"duration \(-d\) 121 s is longer than the 120 s this model makes"),
    (dict(continuation=SOURCE, duration=2.0), r"continuation \(--continue\) lasts 2.00 s: the duration \(-d\) of "
                                              r"2 s leaves nothing to add"),
    (dict(continuation=SOURCE), r"continuation \(--continue\) needs the total length to extend it to"),
    (dict(continuation=SOURCE, duration=4, audio_prompt=SOURCE), r"does not go with audio_prompt \(--init-audio\)"),
    (dict(continuation=SOURCE, duration=4, repaint=(0, 1)), r"does not go with repaint \(--repaint\)"),
    (dict(continuation=SOURCE, duration=4, loop=True), r"a loop cannot extend audio"),
])
def test_bad_input_is_one_line(kwargs, message):
    with pytest.raises(InvalidParameter, match=message) as caught:
        check(**kwargs)
    assert "\n" not in str(caught.value)


def test_a_source_longer_than_the_longest_clip_needs_a_duration():
    with pytest.raises(InvalidParameter, match=r"lasts 2.00 s, longer than the 1.5 s this model makes at once: "
                                               r"give a duration \(-d\)"):
        check_request("calm piano", family="stable_audio3", longest=1.5, audio_prompt=SOURCE, repaint=(0, 1),
                      duration=None)
    assert check_request("calm piano", family="stable_audio3", longest=1.5, audio_prompt=SOURCE, duration=1.0,
                         strength=0.5).duration == 1.0


def test_the_model_refuses_before_sampling(sa3_model):
    with pytest.raises(InvalidParameter, match="longer than the 384 s this model makes at once"):
        sa3_model.generate("calm piano", duration=400)
    with pytest.raises(InvalidParameter, match=r"negative_prompt \(--negative\) needs guidance"):
        sa3_model.generate("calm piano", duration=0.1, negative_prompt="drums")


def test_a_gated_checkpoint_not_cached_says_how_to_get_it(monkeypatch):
    """As for Stable Audio Open 1.0: one line naming the repository, the licence step and the login."""
    import tunesmith
    from tunesmith import hub
    from tunesmith.errors import ModelNotFound

    monkeypatch.setattr(hub, "_why_no_hub", lambda: ("HF_HUB_OFFLINE is set", True))
    monkeypatch.setattr(hub, "cached_folder", lambda repo: None)
    with pytest.raises(ModelNotFound) as caught:
        tunesmith.load("sa3-small")
    line = str(caught.value)
    assert "\n" not in line and "stabilityai/stable-audio-3-small-music is gated" in line
    assert "accept its licence on https://huggingface.co/stabilityai/stable-audio-3-small-music" in line
    assert "hf auth login" in line and "tunesmith download sa3-small" in line


def test_half_precision_on_the_cpu_is_refused_before_loading(tmp_path):
    import tunesmith

    with pytest.raises(InvalidParameter, match=r"^float16 does not suit the CPU: use bfloat16 or float32$"):
        tunesmith.StableAudio3.from_pretrained(tmp_path, device="cpu", dtype="float16")
