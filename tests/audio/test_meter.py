"""Tempo, key, meter and bars: checked once for every family, lengths exact, text families' prompts."""

import logging

import pytest

from tunesmith.audio.meter import Meter, bars_seconds, check_key, check_meter, check_time_signature
from tunesmith.errors import InvalidParameter
from tunesmith.request import batch_requests, check_request


def test_bars_are_exact():
    assert bars_seconds(8, 124) == pytest.approx(15.483870967741936, abs=1e-12)  # 8 * 4 * 60 / 124
    assert round(bars_seconds(8, 124), 3) == 15.484
    assert bars_seconds(4, 90, 3) == 8.0 and bars_seconds(2, 120, 6) == 6.0
    meter, seconds = check_meter(bpm=124, bars=8)
    assert seconds == bars_seconds(8, 124) and meter == Meter(124.0, None, None, 8)


@pytest.mark.parametrize("given, key", [("C major", "C major"), ("f# MINOR", "F# minor"), ("Bb maj", "Bb major"),
                                         (" c♯ min ", "C# minor"), ("EB MINOR", "Eb minor")])
def test_keys(given, key):
    assert check_key(given) == key


def test_time_signatures():
    assert [check_time_signature(v) for v in (2, 3, 4, 6, "3/4", "6/8", "4")] == [2, 3, 4, 6, 3, 6, 4]
    # the written form maps to its numerator (6/8 counts its eighths, as ACE-Step's metadata does)
    assert [check_time_signature(v) for v in ("2/4", "4/4", " 6 / 8 ", "3 /4")] == [2, 4, 6, 3]
    assert check_request("techno", seed=1, bpm=120, time_signature="6/8", bars=2).duration == 6.0


@pytest.mark.parametrize("nonsense", ["3/8", "6/4", "12/8", "4/", "/4", "3//4", "three", "", "3.0", 2.5, True, [3]])
def test_nonsense_meters_are_one_line(nonsense):
    with pytest.raises(InvalidParameter, match=r"time_signature \(--time-signature\) must be 2, 3, 4 or 6 beats per "
                                               r"bar \(2/4, 3/4, 4/4, 6/8\), got") as err:
        check_time_signature(nonsense)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("options, message", [
    (dict(bars=8), r"bars \(--bars\) needs bpm \(--bpm\)"),
    (dict(bpm=20), r"bpm \(--bpm\) must be a tempo from 30 to 300 beats a minute, got 20"),
    (dict(bpm=True), "bpm"),
    (dict(key="H major"), r"key \(--key\) must be a tonic and a mode"),
    (dict(key="C dorian"), r"key \(--key\)"),
    (dict(time_signature=5), r"time_signature \(--time-signature\) must be 2, 3, 4 or 6 beats per bar"),
    (dict(time_signature="7/8"), "time_signature"),
    (dict(bpm=120, bars=0), r"bars \(--bars\) must be a whole number of bars from 1"),
    (dict(bpm=120, bars=2.5), "bars"),
    (dict(bpm=120, bars=4, duration=10), r"duration \(-d\) 10 s and bars \(--bars\) 4 at 120 bpm \(8.000 s\) disagree"),
])
def test_bad_values_are_one_line(options, message):
    with pytest.raises(InvalidParameter, match=message):
        check_request("techno", seed=1, **options)


def test_bars_set_the_duration_a_matching_one_is_fine():
    request = check_request("techno", seed=1, bpm=124, bars=8, duration=15.484)
    assert request.duration == bars_seconds(8, 124) and request.meter.bars == 8
    assert check_request("techno", seed=1, bpm=90, time_signature=3, bars=4).duration == 8.0


def test_loops_snap_to_whole_bars(caplog):
    with caplog.at_level(logging.INFO, logger="tunesmith"):
        request = check_request("techno", seed=1, bpm=124, loop=True, duration=10)
    assert request.duration == bars_seconds(5, 124) and request.meter.bars == 5 and "5 whole bars" in caplog.text
    assert check_request("techno", seed=1, bpm=124, loop=True).duration == bars_seconds(5, 124)  # default 10 s
    assert check_request("techno", seed=1, bpm=124, loop=False, duration=10).duration == 10  # not a loop: as asked
    # ACE-Step makes 10 s at least: the bars are rounded up to reach it
    assert check_request("techno", family="acestep", seed=1, bpm=124, loop=True, duration=10).duration == \
        bars_seconds(6, 124)


def test_text_families_write_it_into_the_prompt():
    musicgen = check_request(["techno", [(0, "ambient."), (2, "drums")]], seed=1, bpm=124, key="a minor", bars=2)
    assert musicgen.schedules == [[(0.0, "techno. key: A minor. bpm: 124.0")],
                                  [(0.0, "ambient. key: A minor. bpm: 124.0"), (2.0, "drums. key: A minor. bpm: 124.0")]]
    stable = check_request("tech house drum loop", family="stable_audio", seed=1, bpm=128, key="F# minor")
    assert stable.schedules == [[(0.0, "tech house drum loop, 128 BPM, F# minor")]]
    song = check_request("synth pop", family="acestep", seed=1, bpm=124, key="C major", time_signature=4)
    assert song.schedules == [[(0.0, "synth pop")]] and song.meter == Meter(124.0, "C major", 4)  # metadata, not text
    assert check_request("techno", seed=1).meter is None


def test_requests_of_different_tempi_are_not_batched():
    with pytest.raises(InvalidParameter, match="differ only in prompts"):
        batch_requests([check_request("a", family="acestep", seed=1, bpm=100),
                        check_request("b", family="acestep", seed=1, bpm=120)])
