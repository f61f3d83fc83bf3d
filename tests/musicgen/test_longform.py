import torch

from tunesmith.musicgen.codec import decode_codes
from tunesmith.musicgen.longform import Window, plan_windows, text_at


def test_windows_advance_by_window_minus_context():
    assert plan_windows(1500, 0, 1500, 600) == [Window(0, 0, 1500)]
    windows = plan_windows(3000, 0, 1500, 600)
    assert windows == [Window(0, 0, 1500), Window(900, 600, 900), Window(1800, 600, 600)]
    assert sum(w.new for w in windows) == 3000


def test_windows_after_a_long_prompt_use_its_last_seconds():
    windows = plan_windows(3000, 2000, 1500, 600)
    assert windows[0] == Window(1400, 600, 900) and sum(w.new for w in windows) == 1000


def test_schedule_lookup():
    schedule = [(0.0, "intro"), (45.0, "drums"), (120.0, "breakdown")]
    assert [text_at(schedule, t) for t in (0, 44.9, 45, 119, 200)] == ["intro", "intro", "drums", "drums", "breakdown"]


def test_chunked_decode_has_no_seams(mono_model):
    codec = mono_model._model.codec
    codes = torch.randint(0, 64, (1, 4, 400))
    whole = decode_codes(codec, codes, 1, chunk=10_000)
    chunked = decode_codes(codec, codes, 1, chunk=120, overlap=20)
    assert chunked.shape == whole.shape == (1, 1, 400 * 640)
    error = (chunked - whole).abs().max() / whole.abs().max()
    assert error < 0.05, f"chunked decode differs by {error:.3f} of the peak"
