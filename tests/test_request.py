"""One validator for the API, the CLI and the server: every value refused before any model loads,
with the parameter and its flag named."""

import math

import numpy as np
import pytest
import soundfile as sf

from tunesmith.errors import InvalidParameter, TunesmithError
from tunesmith.request import MAX_SEED, check_request, check_threads


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-1), "temperature (--temperature) must be a number >= 0"),
    (dict(temperature=math.nan), "temperature"), (dict(top_k=-1), "top_k (--top-k)"), (dict(top_k=2.5), "top_k"),
    (dict(top_p=1.5), "top_p (--top-p) must be between 0 (off) and 1"), (dict(top_p=-0.1), "top_p"),
    (dict(cfg=0.5), "cfg (--cfg)"), (dict(cfg=math.inf), "cfg"), (dict(cfg=math.nan), "cfg"),
    (dict(duration=0), "duration (-d) must be a positive"), (dict(duration=0.005), "shorter than one frame"),
    (dict(duration=4000), "3600 s"), (dict(seed=-1), "seed (--seed)"), (dict(seed=MAX_SEED + 1), "seed"),
    (dict(num_variations=0), "num_variations (-n)"), (dict(context=0), "context (--context) must be greater than 0"),
    (dict(context=30), "less than the 30 s window"), (dict(loop="yes"), "loop (--loop)"),
    (dict(duration=True), "duration"),
])
def test_out_of_range_values_are_refused_with_parameter_and_flag(kwargs, message):
    with pytest.raises(InvalidParameter) as err:
        check_request("jazz", **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_numpy_numbers_are_numbers():
    request = check_request("jazz", duration=np.float32(1), seed=np.int64(3), temperature=np.float64(0.5),
                            top_k=np.int32(10), top_p=np.float32(0.5), cfg=np.int64(2), num_variations=np.int16(2),
                            context=np.float32(5), loop=np.bool_(True))
    assert request.duration == 1.0 and type(request.duration) is float and request.seed == 3
    assert request.sampling.top_k == 10 and type(request.sampling.top_k) is int and request.num_variations == 2
    assert request.loop is True and [s for _, s in request.rows] == [3, 4]


@pytest.mark.parametrize("prompts", ["", "   ", ["jazz", " "], [[(0, "intro"), (5, "")]]])
def test_empty_prompts_are_refused(prompts):
    with pytest.raises(InvalidParameter, match="prompt is empty"):
        check_request(prompts, duration=10)


def test_a_random_seed_leaves_room_for_the_variations():
    for _ in range(200):
        request = check_request("jazz", num_variations=64)
        assert all(0 <= s <= MAX_SEED for _, s in request.rows) and request.rows[-1][1] == request.seed + 63


@pytest.mark.parametrize("samples, param, message", [
    (0, "audio_prompt", "is empty: there is nothing to continue"),
    (300, "audio_prompt", "lasts 9.4 ms, less than one frame (20 ms): there is nothing to continue"),
    (0, "melody", "is empty: there is no tune to follow"),
    ("silent", "melody", "is silent: there is no tune to follow"),
    ("silent", "audio_prompt", "is silent: there is nothing to continue"),
])
def test_empty_short_and_silent_audio_files(tmp_path, samples, param, message):
    path = tmp_path / "in.wav"
    data = np.zeros(32000) if samples == "silent" else 0.3 * np.random.default_rng(0).standard_normal(samples)
    sf.write(str(path), data.astype(np.float32), 32000)
    with pytest.raises(TunesmithError) as err:
        check_request("jazz", **{param: path})
    assert str(err.value) == f"{path} {message}"


def test_audio_arrays_in_either_orientation():
    audio = 0.3 * np.random.default_rng(0).standard_normal((1000, 2)).astype(np.float32)
    request = check_request("jazz", audio_prompt=(audio, 32000), duration=1)
    assert request.audio_prompt[0].shape == (2, 1000) and request.audio_prompt[1] == 32000
    request = check_request("jazz", melody=(audio.T, np.int64(32000)))
    assert request.melody[0].shape == (2, 1000)


def test_threads_more_than_cores_are_allowed_with_a_warning(caplog):
    assert check_threads(4096) == 4096
    assert "more threads than cores" in caplog.text
    with pytest.raises(InvalidParameter, match="threads"):
        check_threads(0)


def test_an_init_audio_past_its_length_is_refused_naming_its_flag(tmp_path):
    from tests.audio.long_files import claim_frames, silent_flac

    from tunesmith.errors import TooLong

    long = claim_frames(silent_flac(tmp_path / "long.flac", 2), 4000 * 16000)  # says 4000 s: nothing decoded
    with pytest.raises(TooLong, match=rf"^audio_prompt \(--init-audio\) {long} lasts 4000\.0 s: more than the "
                                      r"1200 s allowed$"):
        check_request("rain", family="stable_audio", longest=47.0, duration=10, audio_prompt=long)


def test_a_refusal_names_its_parameter_and_each_shell_renders_it():
    """InvalidParameter carries the API keyword (.param); the API and the CLI write it with its flag, the
    server with the JSON field its body names (no rewriting of the message's text)."""
    from tunesmith.cli import said
    from tunesmith.family import FAMILIES

    with pytest.raises(InvalidParameter) as err:
        check_request("rain", family="stable_audio", duration=10, strength=0.5)
    assert err.value.param == "strength"
    line = "strength (--strength) applies to an init audio, given as audio_prompt (--init-audio): there is none"
    assert str(err.value) == said(err.value) == line
    pytest.importorskip("fastapi")
    from tunesmith.server.bodies import compat_names, job_names

    assert err.value.render(job_names()) == "strength applies to an init audio, given as continuation: there is none"
    assert err.value.render(compat_names(FAMILIES["stable_audio"])) == (
        "reference_strength applies to an init audio, given as reference_audio_path: there is none")
    with pytest.raises(InvalidParameter) as err:
        check_request("jazz", cfg=0.5)
    assert err.value.param == "cfg" and err.value.render(compat_names(FAMILIES["musicgen"])).startswith(
        "guidance_coef must be between 1 (no guidance) and 100")
