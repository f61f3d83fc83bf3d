"""Text that is not text (a lone surrogate, a control character) is refused by check_request, so the Python
API and the CLI refuse it as the server does, before a tokenizer meets it."""

import pytest

from tunesmith.errors import InvalidParameter
from tunesmith.request import check_request, text_problem


@pytest.mark.parametrize("prompts, kwargs, name", [
    ("calm \ud800 piano", {}, "prompts (PROMPT)"),
    ("calm \udcff piano", {}, "prompts (PROMPT)"),  # an argv byte that is no UTF-8, as Python decodes it
    ([[0, "intro"], [1, "x\x00y"]], dict(duration=2), "prompts (PROMPT)"),
    (["jazz", "\x1b[31mred"], {}, "prompts (PROMPT)"),
    ("x", dict(family="stable_audio", negative_prompt="no \ud83d drums"), "negative_prompt (--negative)"),
    ("x", dict(family="stable_audio", sampler="dpm\x7f"), "sampler (--sampler)"),
    ("x", dict(family="acestep", lyrics="[verse]\nla \ud800 la", duration=10), "lyrics (--lyrics)"),
    ("x", dict(family="acestep", language="e\x85", duration=10), "language (--language)"),
])
def test_text_that_is_not_text_is_refused_in_one_line(prompts, kwargs, name):
    with pytest.raises(InvalidParameter) as err:
        check_request(prompts, **kwargs)
    message = str(err.value)
    assert message.startswith(f"{name} holds a ") and "\n" not in message, message
    message.encode("utf-8")  # the message quotes no part of the bad text


def test_tabs_line_breaks_and_any_language_are_text():
    assert text_problem("calm\tpiano,\r\nslow — 雨の日 🎹") is None
    request = check_request("calm\tpiano,\nslow — 雨の日 🎹", duration=1)
    assert request.schedules[0][0][1] == "calm\tpiano,\nslow — 雨の日 🎹"
